"""Sphinx tweaks for the IMUSE book, loaded through ``_config.yml`` (``sphinx.local_extensions``)."""


def drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    """Keep the first of identical ``<script>`` entries.

    sphinx-thebe adds its inline ``const THEBE_JS_URL = ...`` each time documents are read, so an
    incremental build can carry it twice: the second copy is a SyntaxError in every reader's
    console ("Identifier 'THEBE_JS_URL' has already been declared")."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        attributes = getattr(js, "attributes", {}) or {}
        # an inline script's filename is None or "" depending on who added it
        key = (str(getattr(js, "filename", js) or ""), tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    scripts[:] = kept  # in place: the template may hold this very list


def setup(app):
    # early: Sphinx stops calling html-page-context handlers at the first one that returns a value
    app.connect("html-page-context", drop_duplicate_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
