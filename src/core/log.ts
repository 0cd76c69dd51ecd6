import { type DestinationStream, type Logger, pino } from 'pino';

export type { Logger } from 'pino';

/** Paths never written to a log, whatever a caller passes in. */
const REDACT = [
  'password',
  '*.password',
  'token',
  '*.token',
  'accessToken',
  '*.accessToken',
  'refreshToken',
  '*.refreshToken',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'headers["x-api-key"]',
  'headers.dpop',
  'headers.cookie',
  '*.headers.authorization',
  '*.headers.cookie',
  'secret',
  '*.secret',
];

export interface LogOptions {
  level?: string;
  destination?: DestinationStream;
}

/** JSON logs (pino) with secrets and tokens redacted. */
export function createLogger(options: LogOptions = {}): Logger {
  const opts = {
    level: options.level ?? 'info',
    base: { service: 'portcullis' },
    redact: { paths: REDACT, censor: '[redacted]' },
  };
  return options.destination ? pino(opts, options.destination) : pino(opts);
}
