import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { basename, dirname } from 'node:path';

/**
 * Watches config files for changes and calls `onChange` once per real change.
 *
 * It watches each file's *directory*, not the file: editors that save by writing a
 * temp file and renaming it, and Kubernetes, which swaps a `..data` symlink inside
 * a mounted ConfigMap directory, both replace the inode a file watch would hold.
 * Events are debounced, and a change counts only when the content hash of the
 * files differs from the last one seen (touches and the kubelet's several
 * renames for one update give one reload).
 */
export class FileWatcher {
  readonly #files: string[];
  readonly #onChange: () => void;
  readonly #debounceMs: number;
  readonly #watchers: FSWatcher[] = [];
  #timer: NodeJS.Timeout | null = null;
  #lastHash = '';
  #closed = false;

  constructor(files: string[], onChange: () => void, debounceMs = 100) {
    this.#files = files;
    this.#onChange = onChange;
    this.#debounceMs = debounceMs;
  }

  /** Starts watching; the current content is the baseline (no reload for it). */
  async start(): Promise<void> {
    this.#lastHash = await this.#hash();
    const names = new Set(this.#files.map((f) => basename(f)));
    for (const dir of new Set(this.#files.map((f) => dirname(f)))) {
      const w = watch(dir, { persistent: false }, (_event, name) => {
        // ConfigMaps change `..data` / `..2026_…` entries, never the file name itself.
        if (name === null || names.has(String(name)) || String(name).startsWith('..')) this.#schedule();
      });
      w.on('error', () => { /* the directory went away; a later start() may watch it again */ });
      this.#watchers.push(w);
    }
  }

  #schedule(): void {
    if (this.#closed) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#check(), this.#debounceMs);
  }

  async #check(): Promise<void> {
    this.#timer = null;
    const h = await this.#hash();
    if (h === this.#lastHash || this.#closed) return;
    this.#lastHash = h;
    this.#onChange();
  }

  async #hash(): Promise<string> {
    const hash = createHash('sha256');
    for (const f of this.#files) {
      // A file missing mid-swap hashes as such; the next event brings the real content.
      hash.update(await readFile(f).catch(() => Buffer.from('\0missing\0')));
      hash.update('\0');
    }
    return hash.digest('hex');
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    for (const w of this.#watchers) w.close();
  }
}
