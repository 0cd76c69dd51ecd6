export { createDemoUpstream, type DemoUpstreamOptions } from './upstream.js';
