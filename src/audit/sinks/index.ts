export { JsonLinesFileSink } from './file.js';
export { createAlertSinks } from './from-config.js';
export { DeliveryQueue } from './queue.js';
export { StdoutSink } from './stdout.js';
export { formatRfc5424, SyslogSink, type SyslogSinkOptions } from './syslog.js';
export { WebhookSink, type WebhookSinkOptions } from './webhook.js';
