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
 * when the role has none left and the work may fall back, another role by the
 * listener's split, an available one first. A role with no available endpoint is
 * tried anyway when nothing better is left (Envoy's panic mode): health checks can
 * be wrong (a loaded machine times them out), and a guess beats a certain failure.
 * So a request fails only once every role it may go to has refused it for itself.
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
  /** Roles whose endpoints this work has tried and left (not one passed over as unavailable). */
  #tried: boolean[] | null = null;

  constructor(p: RoleRoutes, role: number, fallback: boolean) {
    this.#p = p;
    this.#fallback = fallback;
    this.firstRole = this.role = role;
    this.set = p.routes[role]!;
    let i = this.set.pick();
    // Unavailable: an available role of the split is the better first guess.
    if (i < 0 && fallback && this.#drawRole(false)) i = this.set.pick();
    if (i < 0) {
      this.#panic = true;
      i = this.set.start();
    }
    this.index = i;
  }

  get endpoint(): Endpoint {
    return this.set.endpoints[this.index]!;
  }

  /**
   * Moves past the endpoint that just failed: to the role's next endpoint not yet
   * failed (unless `leaveRole`), then (with fallback) to another role not yet tried,
   * available or not. False when nothing is left; the picker then stays on the
   * endpoint that failed.
   */
  next(leaveRole = false): boolean {
    const failed = (this.#failed ??= []);
    failed.push(this.endpoint);
    if (!leaveRole) {
      const i = this.#nextEndpoint();
      if (i >= 0) {
        this.index = i;
        return true;
      }
    }
    if (!this.#fallback) return false;
    (this.#tried ??= new Array<boolean>(this.#p.routes.length).fill(false))[this.role] = true;
    if (!this.#drawRole(false) && !this.#drawRole(true)) return false;
    let i = this.set.pick();
    this.#panic = i < 0;
    if (i < 0) i = this.set.start();
    this.index = i;
    return true;
  }

  /** Whether next(true) would move the work to another role. */
  get canLeaveRole(): boolean {
    if (!this.#fallback) return false;
    for (let i = 0; i < this.#p.routes.length; i++) if (this.#canFallBackTo(i, true)) return true;
    return false;
  }

  /**
   * Whether next() would stay on this role: another of its endpoints can take the
   * work, or there is no other role to move to (then the same endpoint is tried
   * again). False when the work would move to another role.
   */
  get nextStaysOnRole(): boolean {
    return this.#nextEndpoint() >= 0 || !this.canLeaveRole;
  }

  /** The index of this role's next endpoint that may take the work, or -1. */
  #nextEndpoint(): number {
    const eps = this.set.endpoints;
    const n = eps.length;
    for (let k = 1; k < n; k++) {
      const i = (this.index + k) % n;
      if (this.#takes(eps[i]!)) return i;
    }
    return -1;
  }

  /** An endpoint of this role that has not failed this work and may take it. */
  #takes(e: Endpoint): boolean {
    return !this.#failed?.includes(e) && (this.#panic || e.health.available);
  }

  /**
   * Another role not yet tried that the split sends work to (or the one the work was
   * given), and, unless `anyHealth`, that can take work now.
   */
  #canFallBackTo(i: number, anyHealth: boolean): boolean {
    const p = this.#p;
    return i !== this.role && !this.#tried?.[i] && (p.fallbackWeights[i]! > 0 || i === this.firstRole)
      && (anyHealth || p.routes[i]!.available);
  }

  /** Switches to one of the roles #canFallBackTo allows, drawn by the listener's split; false when there is none. */
  #drawRole(anyHealth: boolean): boolean {
    const p = this.#p;
    const n = p.routes.length;
    let total = 0;
    let last = -1;
    for (let i = 0; i < n; i++) {
      if (!this.#canFallBackTo(i, anyHealth)) continue;
      // A weight-0 role is a candidate only as the work's own role: give it a share.
      total += p.fallbackWeights[i]! || 1;
      last = i;
    }
    if (last < 0) return false;
    let r = Math.random() * total;
    for (let i = 0; i < last; i++) {
      if (!this.#canFallBackTo(i, anyHealth)) continue;
      r -= p.fallbackWeights[i]! || 1;
      if (r < 0) return this.#switchTo(i);
    }
    // Rounding left r ≥ 0 before the last candidate: take the last one.
    return this.#switchTo(last);
  }

  #switchTo(role: number): true {
    this.role = role;
    this.set = this.#p.routes[role]!;
    return true;
  }
}
