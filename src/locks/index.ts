// Implemented by the lock-backend work (issue 5): filelock, etcd, pg_advisory behind LockBackend.
export type { LockBackend, LockRequest, HeldLock } from './types.js';
