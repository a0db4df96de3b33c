// Builds the dashboard (ui/) into dist/ui, which the daemon serves at /ui/ (src/api/ui-files.ts).
import { defineConfig } from 'vite';
import { fileURLToPath } from 'node:url';

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/ui/',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: fileURLToPath(new URL('../dist/ui', import.meta.url)),
    emptyOutDir: true,
    // One small bundle: no source maps shipped, no inlined assets beyond the icon.
    sourcemap: false,
    assetsInlineLimit: 0,
  },
});
