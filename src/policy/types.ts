/** Who asks, as policy sees it. The gateway's {@link import('../core/index.js').Principal} fits it. */
export interface PolicyPrincipal {
  readonly id: string;
  /** `user` (default) or `service` (a workload, with its SPIFFE ID). */
  readonly kind?: 'user' | 'service';
  readonly roles: readonly string[];
  readonly groups?: readonly string[];
  readonly spiffeId?: string;
  readonly issuer?: string;
  /** Declared attributes (`department`, `clearance`, …), read by conditions as `principal.<name>`. */
  readonly attributes?: Readonly<Record<string, unknown>>;
}

export interface PolicyResource {
  readonly type?: string;
  readonly id?: string;
  /** The gateway route the request matched. */
  readonly route?: string;
  /** Canonical path. */
  readonly path?: string;
  readonly params?: Readonly<Record<string, string>>;
  /** Declared attributes, read as `resource.<name>`. */
  readonly attributes?: Readonly<Record<string, unknown>>;
}

/** How the principal authenticated (RFC 8176 `amr`, `acr`, time of authentication in ms). */
export interface PolicyAuthentication {
  readonly amr?: readonly string[];
  readonly acr?: string;
  readonly authTime?: number;
}

export interface PolicyContext {
  /** Decision time, ms since the epoch (default: now). */
  readonly time?: number;
  /** Hour of day (UTC) and day of week (0 = Sunday); derived from `time` when not given. */
  readonly hour?: number;
  readonly weekday?: number;
  readonly ip?: string;
  readonly geo?: Readonly<Record<string, unknown>>;
  readonly device?: Readonly<Record<string, unknown>>;
  readonly risk?: Readonly<Record<string, unknown>>;
  readonly authentication?: PolicyAuthentication;
  /** Declared context attributes, read as `context.<name>`. */
  readonly attributes?: Readonly<Record<string, unknown>>;
}

/** The device a request proved it comes from (device certificate or DPoP key), read as `device.*`. */
export interface PolicyDevice {
  readonly id: string;
  /** Enrolled and approved, not revoked. */
  readonly trusted: boolean;
  /** Its last signed posture report passed the compliance rules and has not expired. */
  readonly compliant: boolean;
  readonly platform?: string;
  readonly via?: string;
  /** The posture report's claims: `os.name`, `os.version`, `diskEncrypted`, `screenLock`, … */
  readonly posture?: Readonly<Record<string, unknown>>;
}

/** What is being decided: who does what on which resource, in which circumstances. */
export interface PolicyInput {
  readonly principal: PolicyPrincipal;
  /** A named action (`orders:write`) or an HTTP method. */
  readonly action: string;
  readonly resource: PolicyResource;
  /** The HTTP request, when there is one (the gateway); `method` is matched by rules' `methods`. */
  readonly request?: { readonly method: string; readonly path: string; readonly host?: string };
  readonly context?: PolicyContext;
  readonly device?: PolicyDevice;
}

export type Outcome = 'allow' | 'deny' | 'challenge';

/** What a challenge asks for: a fresh or stronger authentication. */
export interface Requirements {
  readonly mfa?: boolean;
  /** Authentication no older than this many ms. */
  readonly maxAge?: number;
  /** At least this authentication context class. */
  readonly acr?: string;
}

/** A decision with its reasons: the ids of the rules that decided it, and a one-line explanation. */
export interface Decision {
  readonly outcome: Outcome;
  /** Deny: every matching deny rule (empty = nothing allowed it). Allow: every allow rule whose obligations are met. Challenge: the allow rules whose obligations are not. */
  readonly ruleIds: readonly string[];
  readonly reason: string;
  /** For a challenge: exactly what would turn it into an allow. */
  readonly requirements?: Requirements;
  /** Conditions that could not be evaluated (a missing attribute): a deny rule's error counts as a match. */
  readonly errors?: readonly { readonly ruleId: string; readonly message: string }[];
}

/**
 * The policy decision point. The gateway asks it; it never enforces. Implementations compile their
 * rules at load so `decide` does no parsing and no I/O.
 */
export interface PolicyEngine {
  decide(input: PolicyInput): Decision;
}
