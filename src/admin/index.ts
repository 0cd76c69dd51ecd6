export { type AdminDeps, createAdminServer } from './server.js';
