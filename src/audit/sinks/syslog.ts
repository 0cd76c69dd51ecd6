import { type Socket, connect as tcpConnect } from 'node:net';
import { hostname } from 'node:os';
import { connect as tlsConnect } from 'node:tls';
import type { Alert, AlertSink, Severity } from '../alerts.js';
import { QueuedSink } from './queue.js';

/** RFC 5424 severities for our alert levels; facility 10 (authpriv: security/authorization). */
const SEVERITY: Record<Severity, number> = { critical: 2, warning: 4, info: 6 };
const FACILITY = 10;

const sdEscape = (v: string) => v.replace(/[\\"\]]/g, (c) => `\\${c}`);
const token = (v: string, max: number) => v.replace(/[^\x21-\x7e]/g, '_').slice(0, max) || '-';

/**
 * Formats an alert as an RFC 5424 syslog message with structured data
 * (`[portcullis@32473 rule=… group=… count=… seqs=…]`; 32473 is the documentation enterprise number).
 */
export function formatRfc5424(alert: Alert, appName: string, host = hostname()): string {
  const pri = FACILITY * 8 + SEVERITY[alert.severity];
  const sd = `[portcullis@32473 rule="${sdEscape(alert.rule)}" group="${sdEscape(alert.group ?? '')}" count="${alert.count}" seqs="${alert.seqs.join(',')}"]`;
  return `<${pri}>1 ${new Date(alert.at).toISOString()} ${token(host, 255)} ${token(appName, 48)} ${process.pid} ${token(alert.rule, 32)} ${sd} ${alert.summary}`;
}

export interface SyslogSinkOptions {
  host: string;
  port: number;
  /** RFC 5425 (syslog over TLS); `ca` to trust a private CA. */
  tls?: { ca?: string; servername?: string };
  appName: string;
  maxQueue: number;
  maxAttempts: number;
  onDrop?: (alert: Alert, why: 'queue_full' | 'gave_up', err?: unknown) => void;
}

/**
 * Sends alerts to a syslog collector over TCP or TLS, RFC 6587 octet-counting framing
 * (`<length> <message>`), reconnecting as needed.
 */
export class SyslogSink extends QueuedSink implements AlertSink {
  readonly name: string;
  readonly #o: SyslogSinkOptions;
  #socket: Socket | undefined;

  constructor(o: SyslogSinkOptions) {
    super(o);
    this.#o = o;
    this.name = `syslog${o.tls ? '+tls' : ''}:${o.host}:${o.port}`;
  }

  protected deliver(alert: Alert): Promise<void> {
    return this.#write(formatRfc5424(alert, this.#o.appName));
  }

  override async close(): Promise<void> {
    await super.close();
    this.#socket?.end();
    this.#socket = undefined;
  }

  async #connect(): Promise<Socket> {
    if (this.#socket && !this.#socket.destroyed) return this.#socket;
    const { host, port, tls } = this.#o;
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = tls
        ? tlsConnect(
            { host, port, servername: tls.servername ?? host, ...(tls.ca ? { ca: tls.ca } : {}) },
            () => resolve(s),
          )
        : tcpConnect({ host, port }, () => resolve(s));
      s.once('error', reject);
      s.setTimeout(10_000, () => s.destroy(new Error('syslog connection timed out')));
    });
    socket.on('error', () => socket.destroy());
    this.#socket = socket;
    return socket;
  }

  async #write(message: string): Promise<void> {
    const socket = await this.#connect();
    const frame = `${Buffer.byteLength(message)} ${message}`;
    await new Promise<void>((resolve, reject) =>
      socket.write(frame, (err) => (err ? reject(err) : resolve())),
    );
  }
}
