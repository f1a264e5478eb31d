import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FilterValidateContext } from '../config/plugin_api.js';
import type { Protocol } from '../config/types.js';

// Validation's half of the API lives with the validator (config/plugin_api.ts); plugins import it from here.
export type { CheckOptions, FilterValidateContext, ListOptions, RangeOptions, ValueChecks } from '../config/plugin_api.js';

/**
 * The filter plugin API. A filter type is a descriptor: `validate` checks and
 * normalizes its config once per config, `create` resolves everything once per
 * generation and returns the per-request (or per-connection) function.
 */
export interface FilterDescriptor<C = unknown, E extends Exchange = Exchange> {
  type: string;
  /** Which listener protocols the filter can run on; `http` filters are refused on tcp listeners; `both`: any listener (udp too). */
  scope: 'http' | 'tcp' | 'both';
  /** Checks the raw entry (including its `type` key), reports issues through ctx, returns the normalized config. */
  validate(raw: Record<string, unknown>, ctx: FilterValidateContext): C;
  /** Once per generation and listener: precompute, then return the hot-path function. */
  create(config: C, ctx: FilterCreateContext): Filter<E>;
  /**
   * Optional, for filters that split traffic: the relative weight of each role
   * (roles left out get 0). The listener's first filter that has this gives the
   * split used when a request's role cannot take it and it may go elsewhere
   * (`ex.fallback`); without one, the split is equal.
   */
  splitWeights?(config: C): Readonly<Record<string, number>>;
  /**
   * Optional: response header edits that apply to every answer on the listener, the
   * upstream's and every one switchyard makes itself (a filter's 429 or 503, a 502, the
   * parser's 400), whatever this filter's place in the chain. Collected once per
   * generation, in filter order (`headers` has this), and the start of each request's
   * `Exchange.responseHeaderEdits`.
   */
  responseHeaderEdits?(config: C): readonly HeaderEdit[];
}

/**
 * A filter runs once per HTTP request or TCP connection. It may pick a role
 * (`ex.role = i`, an index into `ctx.roles`) or answer (`ex.reply(...)`). Return `true` to continue the chain, `false` once it answered.
 * Return a promise only when the filter really waits; sync is the fast path.
 */
export interface Filter<E extends Exchange = Exchange> {
  (ex: E): boolean | Promise<boolean>;
  /**
   * Optional cleanup of what `create` set up (a timer, a connection): runs once,
   * when the generation the filter was created for has closed (its work drained),
   * or at once if the build fails after `create`. A throw or a rejection is logged
   * (SY_ERR_FILTER_CLOSE) and stops nothing else.
   */
  close?(): void | Promise<void>;
}

/** A role as filters see it: its name, its meta in the target vset, and whether it can take work now. */
export interface RoleView {
  readonly name: string;
  readonly meta: Readonly<Record<string, string>>;
  /** Some endpoint of the role's target channel is healthy and not ejected. */
  readonly available: boolean;
}

export interface FilterCreateContext {
  readonly listener: string;
  readonly vset: string;
  readonly channel: string;
  readonly protocol: Protocol;
  readonly generation: number;
  /** The target vset's roles; `ex.role` indexes this array. */
  readonly roles: readonly RoleView[];
  /** Index of a role in `roles`, or -1. */
  roleIndex(name: string): number;
  /** The live instance of a declared component. */
  component<T = unknown>(name: string): T;
}

/** What every unit of work shows the filters, whatever its protocol. */
interface ExchangeBase {
  /** Index of the chosen role in the listener's roles, -1 while none is chosen. */
  role: number;
  /**
   * Whether the request (or connection) may go to another role when the chosen one
   * has no endpoint that can take it, by the listener's split. `weighted` sets it
   * when it picks; a role pinned by `header_route` keeps it false unless its rule
   * says `fallback: weighted`. No filter picking a role counts as a split.
   */
  fallback: boolean;
  /**
   * A role that was asked for but could not take the request, so another serves it
   * (-1: none); an http response then says so in `x-switchyard-fallback`.
   */
  fallbackFrom: number;
  readonly listener: string;
  /** The client's address (the socket's remote address). */
  readonly remoteAddress: string;
  /**
   * Answers the request and ends the chain (http), or refuses the connection (tcp:
   * the socket is destroyed; status and body are logged only).
   */
  reply(status: number, body?: string, headers?: Record<string, string>): void;
}

/** One HTTP request (or WebSocket upgrade) on its way through an http listener's chain. */
export interface HttpExchange extends ExchangeBase {
  readonly protocol: 'http';
  readonly req: IncomingMessage;
  /** The response, for filters that answer; null for an upgrade (answer with `reply`). */
  readonly res: ServerResponse | null;
  /** A WebSocket upgrade: once forwarded, the connection becomes a tunnel. */
  readonly upgrade: boolean;
  /**
   * Header edits to apply when the request is forwarded, and to the response (the
   * upstream's or a local answer); null when none. A filter appends its own list
   * (`headers` does, for requests). `responseHeaderEdits` starts as the listener's
   * (FilterDescriptor.responseHeaderEdits), so those reach every answer; a list a
   * filter appends at run time reaches only answers made after it ran. Request
   * edits apply to plain requests, not upgrades; response edits to switchyard's own
   * answers on upgrades too, never to a tunnel's upstream answer.
   */
  requestHeaderEdits: readonly HeaderEdit[] | null;
  responseHeaderEdits: readonly HeaderEdit[] | null;
}

/** One TCP connection on its way through a tcp listener's chain. */
export interface TcpExchange extends ExchangeBase {
  readonly protocol: 'tcp';
  /** The client connection. */
  readonly socket: Socket;
}

/** A new client flow (source ip:port) of a udp listener, at its first datagram. */
export interface UdpExchange extends ExchangeBase {
  readonly protocol: 'udp';
  /** The client's source port (remoteAddress has its address). */
  readonly remotePort: number;
}

/**
 * One unit of work on its way through a filter chain, told apart by `protocol`.
 * One object per unit of work; everything else the chain needs is per generation.
 * A filter of scope `http` only ever sees an HttpExchange (the validator refuses
 * it on tcp listeners); one of scope `both` checks `ex.protocol`.
 */
export type Exchange = HttpExchange | TcpExchange | UdpExchange;

/**
 * One header edit, compiled once per generation: `remove` drops every occurrence,
 * `set` replaces them with one value, `add` appends one. `value` is a template:
 * strings, and numbers that index the variables role, vset, listener, generation.
 */
export interface HeaderEdit {
  op: 'set' | 'add' | 'remove';
  name: string;
  /** `name` in lower case, for matching. */
  lower: string;
  value: readonly (string | number)[];
}
