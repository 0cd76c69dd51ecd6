export type {
  AuditDraft,
  AuditRecord,
  AuditStore,
  ChainHasher,
  RefreshRotation,
  SessionRecord,
  SessionStore,
  Store,
  StoredCheckpoint,
  UserRecord,
  UserStatus,
  UserStore,
} from './contracts.js';
export { StoreError } from './contracts.js';
export { openSqliteStore, type SqliteStoreOptions } from './sqlite.js';
