// Portcullis's addition to the shared harness (not one of its peers): the floor under any Node gateway
// on this machine. node:http in, undici `dispatch` out over a keep-alive Pool (the transport Portcullis
// uses, with the same kind of handler writing the answer straight into the response), hop-by-hop
// headers filtered both ways, nothing else: no token, no policy, no audit, no security headers.
// Whatever a Node gateway does per request costs CPU on top of this one's.
import http from 'node:http';
import { Pool } from 'undici';
import { HOST, need, onTerm, port } from '../lib/env.mjs';
import { forwarder } from './forward.mjs';

const pool = new Pool(need('UPSTREAM_URL'), { connections: 64, pipelining: 1, keepAliveTimeout: 60_000 });
const forward = forwarder(pool);

const server = http.createServer((req, res) => forward(req, res));
server.keepAliveTimeout = 65_000;
server.listen(port(), HOST);
onTerm(() => { server.close(); void pool.close(); });
