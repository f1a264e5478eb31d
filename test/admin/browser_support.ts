import { chromium, type Browser } from 'playwright-core';
import { toolPath } from '../setup/requirements.js';

/** Debian's headless Chromium on a fresh temporary profile, with nothing of its own reaching the network. */
export function launchChromium(extraArgs: string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: toolPath('chromium'),
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-proxy-server', ...extraArgs],
  });
}
