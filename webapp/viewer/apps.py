import mimetypes

from django.apps import AppConfig


class ViewerConfig(AppConfig):
    name = "webapp.viewer"
    label = "viewer"
    verbose_name = "CT viewer"

    def ready(self):
        # The viewer's decoders are WebAssembly and its workers are ES modules: browsers refuse to
        # compile WASM served under another type and module scripts not served as JavaScript.
        # Whitenoise (production) knows both; Django's static serving (runserver, live_server)
        # asks Python's mimetypes, whose tables depend on the machine's /etc/mime.types.
        mimetypes.add_type("application/wasm", ".wasm")
        mimetypes.add_type("text/javascript", ".js")
        mimetypes.add_type("text/javascript", ".mjs")
