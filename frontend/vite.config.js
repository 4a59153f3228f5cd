// Builds the viewer into ../static/dist/ for Django's staticfiles (and whitenoise in production).
// base './': every chunk, worker and codec WASM is referenced relative to the module that loads it,
// so the bundle works under any STATIC_URL. The manifest (.vite/manifest.json) tells the Django
// template the hashed name of the entry.
import { defineConfig } from 'vite';

export default defineConfig({
  base: './',
  build: {
    outDir: '../static/dist',
    emptyOutDir: true,
    manifest: true,
    target: 'es2022',
    chunkSizeWarningLimit: 6000,
    rollupOptions: { input: { viewer: 'src/main.js' } },
  },
  worker: { format: 'es' },
});
