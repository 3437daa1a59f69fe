import { defineConfig } from "vite";

// Built into the Python package, which the hub serves at /ui/ (api/routers/ui.py).
export default defineConfig({
  base: "/ui/",
  build: {
    outDir: "../src/cpnet/ui/static",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
  },
});
