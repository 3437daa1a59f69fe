"""The dashboard's built files (static/, made from ui/ by `make ui` with Vite) and the province
boundaries it draws (static/data/cn-provinces.json: Natural Earth, public domain; see
static/data/SOURCE.md). The hub serves them at /ui (api/routers/ui.py)."""
