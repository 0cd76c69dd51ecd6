export type { CliIO, Command } from './io.js';
export { runCli } from './main.js';
