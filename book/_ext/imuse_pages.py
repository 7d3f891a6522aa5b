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


# plotly.js (4.8 MB) is loaded only by pages with a plotly figure (imuse_lib.report.plotly_html
# marks them with this class), deferred so the text paints first; the figures' inline calls wait
# for DOMContentLoaded, which comes after deferred scripts have run.
PLOTLY_JS = "_static/vendor/plotly.min.js"
PLOTLY_MARK = 'class="plotly-graph-div"'


def plotly_where_used(app, pagename, templatename, context, doctree):
    """Add plotly.js (``defer``) to the scripts of a page whose body has a plotly figure."""
    from sphinx.builders.html._assets import _JavaScript

    scripts = context.get("script_files")
    if scripts is None or PLOTLY_MARK not in (context.get("body") or ""):
        return
    if not any(str(getattr(js, "filename", js) or "").split("?")[0].endswith("plotly.min.js") for js in scripts):
        scripts.append(_JavaScript(PLOTLY_JS, defer="defer", priority=900))


def setup(app):
    app.connect("html-page-context", plotly_where_used, priority=110)
    # early: Sphinx stops calling html-page-context handlers at the first one that returns a value
    app.connect("html-page-context", drop_duplicate_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
