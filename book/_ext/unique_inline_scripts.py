"""Write each inline <script> once per page.

Sphinx 7.4 re-adds extensions' inline scripts when it prepares writing (``filename or ''``
defeats its own de-duplication), so sphinx-thebe's ``const THEBE_JS_URL`` is declared
twice and every page logs a SyntaxError in the browser console.
"""


def _drop_repeated_scripts(app, pagename, templatename, context, doctree):
    seen = set()
    unique = []
    for script in context.get("script_files", []):
        attributes = getattr(script, "attributes", {})
        key = (getattr(script, "filename", str(script)) or "", tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
