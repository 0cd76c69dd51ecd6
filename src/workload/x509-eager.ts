// Imported by the workload barrel and the SDK's mTLS helpers: @peculiar/x509 loads with them, so their
// synchronous certificate functions work without a `loadX509()` (see ./x509.ts). The gateway does not
// import it.
// tsyringe, under @peculiar/x509, needs the Reflect metadata API before it loads.
import 'reflect-metadata';
import * as lib from '@peculiar/x509';
import { provideX509 } from './x509.js';

provideX509(lib);
