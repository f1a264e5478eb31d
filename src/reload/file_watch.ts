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
  #checking = false;
  /** An event came while a check ran: check again after it. */
  #again = false;
  #lastHash = '';
  #closed = false;

  constructor(files: string[], onChange: () => void, debounceMs = 100) {
    this.#files = files;
    this.#onChange = onChange;
    this.#debounceMs = debounceMs;
  }

  /**
   * Starts watching. The baseline (no reload for it) is `baseline` when given,
   * else the current content. Give the hash taken *before* the config was read
   * (FileWatcher.hash): a change written while the first generation was being
   * built then still triggers a reload; with the content at start() as the
   * baseline, such a change would be taken for the running config and never applied.
   */
  async start(baseline?: string): Promise<void> {
    this.#lastHash = baseline ?? await this.#hash();
    const names = new Set(this.#files.map((f) => basename(f)));
    for (const dir of new Set(this.#files.map((f) => dirname(f)))) {
      const w = watch(dir, { persistent: false }, (_event, name) => {
        // ConfigMaps change `..data` / `..2026_…` entries, never the file name itself.
        if (name === null || names.has(String(name)) || String(name).startsWith('..')) this.#schedule();
      });
      w.on('error', () => { /* the directory went away; a later start() may watch it again */ });
      this.#watchers.push(w);
    }
    // Anything that changed between the baseline and now.
    if (baseline !== undefined) this.#schedule();
  }

  /** The content hash of `files`, as the watcher compares it. */
  static hash(files: string[]): Promise<string> {
    return new FileWatcher(files, () => {}).#hash();
  }

  #schedule(): void {
    if (this.#closed) return;
    // One check at a time: two overlapping checks could both take the same change.
    if (this.#checking) {
      this.#again = true;
      return;
    }
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#check(), this.#debounceMs);
  }

  async #check(): Promise<void> {
    this.#timer = null;
    this.#checking = true;
    try {
      const h = await this.#hash();
      if (h === this.#lastHash || this.#closed) return;
      // A writer that pauses mid-save (no event for a debounce period) would hand us a
      // half-written file that may still parse: only content that holds still for
      // another debounce period counts.
      await new Promise((r) => setTimeout(r, this.#debounceMs));
      if (this.#closed) return;
      if ((await this.#hash()) !== h) {
        this.#again = true;
        return;
      }
      this.#lastHash = h;
      this.#onChange();
    } finally {
      this.#checking = false;
      if (this.#again) {
        this.#again = false;
        this.#schedule();
      }
    }
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
