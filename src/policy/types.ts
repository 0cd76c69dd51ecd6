import type { Principal } from '../core/index.js';

/** What is being decided: who does what on which resource, in which circumstances. */
export interface PolicyInput {
  readonly principal: Principal;
  readonly action: { readonly method: string };
  readonly resource: {
    readonly routeId: string;
    readonly path: string;
    readonly params: Readonly<Record<string, string>>;
  };
  readonly context: { readonly ip: string; readonly time: number };
}

export type Outcome = 'allow' | 'deny' | 'challenge';

/** A decision with its reasons: the ids of the rules that decided it, and a one-line explanation. */
export interface Decision {
  readonly outcome: Outcome;
  readonly ruleIds: readonly string[];
  readonly reason: string;
}

/**
 * The policy decision point. The gateway asks it; it never enforces. Implementations compile their
 * rules at load so `decide` does no parsing and no I/O.
 */
export interface PolicyEngine {
  decide(input: PolicyInput): Decision;
}
