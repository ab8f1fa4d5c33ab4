import { defineConfig } from 'vitest/config';

// The browser tests: real Chromium (playwright-core, the system's
// /usr/bin/chromium) against the built page in ui/dist.
export default defineConfig({
  test: {
    include: ['tests/e2e/**/*.e2e.ts'],
    environment: 'node',
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
