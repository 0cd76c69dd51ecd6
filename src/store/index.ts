export type {
  AuditDraft,
  AuditRecord,
  AuditStore,
  ChainHasher,
  MfaChallengeRecord,
  MfaChallengeStore,
  RefreshActivity,
  RefreshRotation,
  ServiceAccountRecord,
  ServiceAccountStore,
  ServiceAccountUpdate,
  SessionRecord,
  SessionStore,
  Store,
  StoredCheckpoint,
  UserRecord,
  UserStatus,
  UserStore,
  UserUpdate,
} from './contracts.js';
export { StoreError } from './contracts.js';
export { openSqliteStore, type SqliteStoreOptions } from './sqlite.js';
