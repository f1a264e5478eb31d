import type { Endpoint, EndpointSet } from './endpoints.js';

/** A listener's routes, as the picker needs them (ListenerPlan implements it). */
export interface RoleRoutes {
  /** Per role index: the endpoints of the listener's target channel. */
  readonly routes: readonly EndpointSet[];
  /** Per role index: its share when work falls back to another role (0: never a fallback). */
  readonly fallbackWeights: readonly number[];
}

// hot path
/**
 * The role for work no filter gave one: the equal split of the contract, over the
 * roles that can take work now (over all of them when none can).
 */
export function defaultRole(p: RoleRoutes): number {
  const routes = p.routes;
  const n = routes.length;
  const r = Math.floor(Math.random() * n);
  if (n === 1 || routes[r]!.available) return r;
  let count = 0;
  for (let i = 0; i < n; i++) if (routes[i]!.available) count++;
  if (count === 0) return r;
  let k = Math.floor(Math.random() * count);
  for (let i = 0; i < n; i++) if (routes[i]!.available && k-- === 0) return i;
  return r;
}

/**
 * The endpoints one request or connection tries, in order: round robin over the
 * chosen role's available endpoints; after each failure the next one of the role;
 * when the role has none left and the work may fall back, another available role
 * by the listener's split. A role with no available endpoint and nowhere else to
 * go is tried anyway, whatever its health (Envoy's panic mode): a guess beats a
 * certain failure, and health checks can be wrong.
 */
export class EndpointPicker {
  /** The role now tried, and its endpoints. */
  role: number;
  set: EndpointSet;
  index: number;
  /** The role the work was given. */
  readonly firstRole: number;
  readonly #p: RoleRoutes;
  readonly #fallback: boolean;
  #panic = false;
  #failed: Endpoint[] | null = null;
  #tried: boolean[] | null = null;

  constructor(p: RoleRoutes, role: number, fallback: boolean) {
    this.#p = p;
    this.#fallback = fallback;
    this.firstRole = this.role = role;
    this.set = p.routes[role]!;
    let i = this.set.pick();
    if (i < 0 && fallback && this.#otherRole()) i = this.set.pick();
    if (i < 0) {
      this.#panic = true;
      i = this.set.start();
    }
    this.index = i;
  }

  get endpoint(): Endpoint {
    return this.set.endpoints[this.index]!;
  }

  /** Another role than the one the work was given serves it. */
  get fellBack(): boolean {
    return this.role !== this.firstRole;
  }

  /**
   * Moves past the endpoint that just failed: to the role's next endpoint not yet
   * failed, then (with fallback) to another role. False when nothing is left; the
   * picker then stays on the endpoint that failed.
   */
  next(): boolean {
    const failed = (this.#failed ??= []);
    failed.push(this.endpoint);
    const eps = this.set.endpoints;
    const n = eps.length;
    for (let k = 1; k < n; k++) {
      const i = (this.index + k) % n;
      if (this.#takes(eps[i]!)) {
        this.index = i;
        return true;
      }
    }
    if (this.#fallback && this.#otherRole()) {
      const i = this.set.pick();
      if (i >= 0) {
        this.index = i;
        this.#panic = false;
        return true;
      }
    }
    return false;
  }

  /**
   * Whether next() would stay on this role: another of its endpoints can take the
   * work, or there is no other role to move to (then the same endpoint is tried
   * again). False when the work would move to another role.
   */
  get nextStaysOnRole(): boolean {
    const eps = this.set.endpoints;
    const n = eps.length;
    for (let k = 1; k < n; k++) if (this.#takes(eps[(this.index + k) % n]!)) return true;
    if (!this.#fallback) return true;
    for (let i = 0; i < this.#p.routes.length; i++) if (i !== this.role && this.#canFallBackTo(i)) return false;
    return true;
  }

  /** An endpoint of this role that has not failed this work and may take it. */
  #takes(e: Endpoint): boolean {
    return !this.#failed?.includes(e) && (this.#panic || e.health.available);
  }

  /** A role not yet tried that the split sends work to and that can take it now. */
  #canFallBackTo(i: number): boolean {
    const p = this.#p;
    return !this.#tried?.[i] && p.fallbackWeights[i]! > 0 && p.routes[i]!.available;
  }

  /** Switches to an available role not yet tried, drawn by the listener's split; false when there is none. */
  #otherRole(): boolean {
    const p = this.#p;
    const n = p.routes.length;
    const tried = (this.#tried ??= new Array<boolean>(n).fill(false));
    tried[this.role] = true;
    let total = 0;
    for (let i = 0; i < n; i++) if (this.#canFallBackTo(i)) total += p.fallbackWeights[i]!;
    if (total === 0) return false;
    let r = Math.random() * total;
    for (let i = 0; i < n; i++) {
      if (!this.#canFallBackTo(i)) continue;
      r -= p.fallbackWeights[i]!;
      if (r < 0 || i === n - 1) return this.#switchTo(i);
    }
    // Rounding left r ≥ 0 past the last candidate: take the last one.
    for (let i = n - 1; i >= 0; i--) if (this.#canFallBackTo(i)) return this.#switchTo(i);
    return false;
  }

  #switchTo(role: number): true {
    this.role = role;
    this.set = this.#p.routes[role]!;
    return true;
  }
}
