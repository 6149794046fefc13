"""Web page and HTTP API on top of `Captioner`: `create_app(captioner)` and `serve(run_dir)` in app.py."""
