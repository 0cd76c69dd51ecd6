// Test plumbing: response bodies in tests are asserted on, not trusted, so `fetch(...).json()` is loosely typed here.
declare global {
  interface Body {
    // biome-ignore lint/suspicious/noExplicitAny: assertions check the shape
    json(): Promise<any>;
  }
  interface Response {
    // biome-ignore lint/suspicious/noExplicitAny: assertions check the shape
    json(): Promise<any>;
  }
}

export {};
