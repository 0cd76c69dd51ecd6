// @peculiar/x509 loads on first need, not with the gateway. With its ASN.1 schemas, tsyringe and the
// Reflect metadata polyfill it is the largest library Portcullis imports (≈ 10–13 MB of RSS in a gateway
// process), and a gateway with no workload CA, device certificates, client-certificate listener or mTLS
// upstream never touches a certificate (bench/README.md, "what importing costs").
//
// Code that works with certificates reads the library through `x509`, a view that throws until it is
// loaded. Async entry points (the CA, the workload API, device enrolment, the agent, the CLI's certificate
// commands) call `loadX509()` first; the gateway calls it at build time when its config needs
// certificates on a synchronous path (SPIFFE client or upstream checks). The workload barrel
// (`src/workload/index.ts`) and the SDK's mTLS helpers (`src/sdk/mtls.ts`, exported by `portcullis`)
// import it statically through ./x509-eager.ts, so an application using those APIs synchronously keeps
// working as before.
import { webcrypto } from 'node:crypto';
import type * as X509 from '@peculiar/x509';

let lib: typeof X509 | undefined;
let loading: Promise<typeof X509> | undefined;

/** Hands over the library, imported statically by a caller (with `reflect-metadata` before it). */
export function provideX509(x: typeof X509): void {
  if (lib) return;
  x.cryptoProvider.set(webcrypto as never);
  lib = x;
}

/** Loads the library once; later calls return the same promise. */
export function loadX509(): Promise<typeof X509> {
  if (lib) return Promise.resolve(lib);
  loading ??= (async () => {
    // tsyringe, under @peculiar/x509, needs the Reflect metadata API before it loads.
    await import('reflect-metadata');
    const x = await import('@peculiar/x509');
    provideX509(x);
    return x;
  })();
  // A failed import is not remembered: the next call tries again.
  loading.catch(() => {
    loading = undefined;
  });
  return loading;
}

/** Whether the library is loaded (for tests and diagnostics). */
export const x509Loaded = (): boolean => lib !== undefined;

/**
 * The library, for code that runs after `loadX509()` or `provideX509()`. Reading it before is a
 * programming error (a path that needs certificates and does not load them) and throws.
 */
export const x509: typeof X509 = new Proxy({} as typeof X509, {
  get(_, name) {
    if (!lib)
      throw new Error(`@peculiar/x509 is not loaded (reading ${String(name)}): call loadX509() first`);
    return (lib as unknown as Record<PropertyKey, unknown>)[name];
  },
});
