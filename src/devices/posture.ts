import { z } from 'zod';

/**
 * A posture report: what the device's agent says about it, signed with the device's key (a compact JWS,
 * `typ: posture+jwt`, ES256 or EdDSA). Dates are RFC 3339 or seconds since the epoch.
 */
export const postureClaims = z.strictObject({
  /** The device the report is about (must be the device it is submitted for). */
  device: z.string().min(1).max(64),
  /** When the agent made the report (seconds). */
  iat: z.number().int().positive(),
  os: z.strictObject({
    name: z.string().min(1).max(32),
    version: z.string().regex(/^\d+(\.\d+)*$/, 'a dotted version such as 14.4.1'),
  }),
  diskEncrypted: z.boolean(),
  screenLock: z.boolean(),
  firewall: z.boolean(),
  agentVersion: z.string().regex(/^\d+(\.\d+)*$/, 'a dotted version such as 1.2.0'),
  lastPatch: z.union([z.iso.date(), z.iso.datetime({ offset: true })]),
});
export type PostureClaims = z.infer<typeof postureClaims>;

/** The compliance rules of `devices.posture.rules` (durations in ms). */
export interface ComplianceRules {
  readonly diskEncryption: boolean;
  readonly screenLock: boolean;
  readonly firewall: boolean;
  readonly minOsVersion: Readonly<Record<string, string>>;
  readonly minAgentVersion?: string | undefined;
  readonly maxPatchAge?: number | undefined;
  readonly allowedOs?: readonly string[] | undefined;
}

/** Compares dotted versions numerically (`14.10` > `14.9`); missing parts count as 0. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}

/**
 * Judges a report against the rules at time `now`: every rule that fails is named with what was found,
 * so an operator (and the user) can see why a device is not compliant.
 */
export function judgePosture(
  report: PostureClaims,
  rules: ComplianceRules,
  now: number,
): { compliant: boolean; failures: string[] } {
  const failures: string[] = [];
  const os = report.os.name.toLowerCase();
  if (rules.allowedOs && !rules.allowedOs.some((o) => o.toLowerCase() === os))
    failures.push(`os: ${report.os.name} is not allowed`);
  if (rules.diskEncryption && !report.diskEncrypted)
    failures.push('diskEncryption: the disk is not encrypted');
  if (rules.screenLock && !report.screenLock) failures.push('screenLock: no screen lock');
  if (rules.firewall && !report.firewall) failures.push('firewall: the firewall is off');
  const minOs = Object.entries(rules.minOsVersion).find(([name]) => name.toLowerCase() === os)?.[1];
  if (minOs !== undefined && compareVersions(report.os.version, minOs) < 0)
    failures.push(`minOsVersion: ${report.os.name} ${report.os.version} is older than ${minOs}`);
  if (rules.minAgentVersion !== undefined && compareVersions(report.agentVersion, rules.minAgentVersion) < 0)
    failures.push(`minAgentVersion: agent ${report.agentVersion} is older than ${rules.minAgentVersion}`);
  const patchedAt = Date.parse(report.lastPatch);
  if (patchedAt > now + 86_400_000) failures.push(`lastPatch: ${report.lastPatch} is in the future`);
  if (rules.maxPatchAge !== undefined) {
    const patched = Date.parse(report.lastPatch);
    const days = Math.floor((now - patched) / 86_400_000);
    if (now - patched > rules.maxPatchAge)
      failures.push(`maxPatchAge: last patched ${days} days ago (${report.lastPatch})`);
  }
  return { compliant: failures.length === 0, failures };
}
