import { isAbsolute, resolve } from 'node:path';
import type { AlertSinkConfig } from '../../config/index.js';
import type { Alert, AlertSink } from '../alerts.js';
import { JsonLinesFileSink } from './file.js';
import { StdoutSink } from './stdout.js';
import { SyslogSink } from './syslog.js';
import { WebhookSink } from './webhook.js';

/** Builds the configured alert sinks; `onDrop` counts undeliverable alerts per sink. */
export function createAlertSinks(
  configs: readonly AlertSinkConfig[],
  baseDir: string,
  onDrop: (sink: string, why: 'queue_full' | 'gave_up', alert: Alert, err?: unknown) => void,
): AlertSink[] {
  return configs.map((c): AlertSink => {
    switch (c.type) {
      case 'stdout':
        return new StdoutSink();
      case 'file': {
        const path = isAbsolute(c.path) ? c.path : resolve(baseDir, c.path);
        return new JsonLinesFileSink(path, { maxBytes: c.maxBytes, keep: c.keep, onError: () => undefined });
      }
      case 'webhook': {
        const name = `webhook:${new URL(c.url).origin}`;
        return new WebhookSink({
          url: c.url,
          timeoutMs: c.timeout,
          maxQueue: c.maxQueue,
          maxAttempts: c.maxAttempts,
          ...(c.headers ? { headers: c.headers } : {}),
          onDrop: (alert, why, err) => onDrop(name, why, alert, err),
        });
      }
      case 'syslog': {
        const name = `syslog:${c.host}:${c.port}`;
        const tls =
          c.tls === false
            ? undefined
            : c.tls === true
              ? {}
              : {
                  ...(c.tls.ca ? { ca: c.tls.ca } : {}),
                  ...(c.tls.servername ? { servername: c.tls.servername } : {}),
                };
        return new SyslogSink({
          host: c.host,
          port: c.port,
          ...(tls ? { tls } : {}),
          appName: c.appName,
          maxQueue: c.maxQueue,
          maxAttempts: c.maxAttempts,
          onDrop: (alert, why, err) => onDrop(name, why, alert, err),
        });
      }
      default: {
        const unknown: never = c;
        throw new Error(`unknown alert sink ${JSON.stringify(unknown)}`);
      }
    }
  });
}
