import type { ComponentValidateContext } from '../config/plugin_api.js';

// Validation's half of the API lives with the validator (config/plugin_api.ts); plugins import it from here.
export type { ComponentValidateContext } from '../config/plugin_api.js';

/**
 * The component lifecycle from the Layotto design. A component holds state that
 * outlives generations (a token bucket, a connection pool); filters use it.
 */
export interface Component {
  init(metadata: Record<string, string>): Promise<void>;
  /**
   * Optional: a new instance that replaces one of the same type (re-init) may take
   * over its state here, after init and before ready. The predecessor is still
   * serving; copy, do not move.
   */
  inherit?(predecessor: Component): Promise<void> | void;
  /** Awaited before the component takes traffic. */
  ready?(): Promise<boolean>;
  /** Incremental update in place; `needReload: true` asks the runtime to re-initialise instead. */
  applyConfig?(metadata: Record<string, string>): Promise<{ needReload: boolean }>;
  /**
   * Optional, with applyConfig: whether applyConfig(metadata) would answer
   * needReload, told without changing anything, so that a dry run says
   * `reinitialized` and the build re-creates the instance without asking it.
   */
  needsReload?(metadata: Record<string, string>): boolean;
  /** After its last generation drained. */
  close(): Promise<void>;
}

/** What a new instance is told about itself. */
export interface ComponentInfo {
  /** Its name in `components` (e.g. a default key prefix, a connection name). */
  readonly name: string;
}

/** A component type, registered like a filter type. */
export interface ComponentDescriptor {
  type: string;
  /** Checks the metadata (string → string); report every problem. */
  validate(metadata: Readonly<Record<string, string>>, ctx: ComponentValidateContext): void;
  create(info: ComponentInfo): Component;
}
