"""Colab opens the page's notebook, not its MyST source (jupyter-book#752).

sphinx-book-theme links Colab to ``github/<org>/<repo>/blob/<branch>/<page>.md``, which Colab
cannot read: it parses the file as JSON. The notebook a student should get is the one the
page's download button serves, ``_sources/<page>.ipynb`` in the built site. This rewrites the
Colab link to that same path on the branch ``colab_notebooks_branch``, where CI publishes the
built site's ``_sources`` folder; nothing here needs the network at build time. Binder keeps
the theme's link: it runs the repository, where jupytext opens the ``.md``.
"""

import re
from pathlib import Path

from sphinx.util import logging

LOGGER = logging.getLogger(__name__)
COLAB_BUTTON_TEXT = "Colab"
LAUNCH_GROUP_LABEL = "launch-buttons"
# What the theme writes after the repository: /blob/<branch>/<path of the source>.
GITHUB_BLOB_PATH = re.compile(r"/blob/[^/]+/.+$")


def notebook_path(pagename: str) -> str:
    """The page's notebook, relative to the built site's `_sources` (the download's path)."""
    return f"{pagename}.ipynb"


def colab_notebook_url(theme_url: str, branch: str, pagename: str) -> str:
    """The theme's Colab URL, pointed at the page's notebook on `branch`."""
    if not GITHUB_BLOB_PATH.search(theme_url):
        raise ValueError(f"not a Colab-on-GitHub link: {theme_url}")
    return GITHUB_BLOB_PATH.sub(f"/blob/{branch}/{notebook_path(pagename)}", theme_url)


def _colab_buttons(header_buttons: list[dict]):
    for group in header_buttons:
        if group.get("label") == LAUNCH_GROUP_LABEL:
            yield from (b for b in group.get("buttons", []) if b.get("text") == COLAB_BUTTON_TEXT)


def point_colab_at_notebook(app, pagename, templatename, context, doctree):
    buttons = list(_colab_buttons(context.get("header_buttons", [])))
    if not buttons:
        return
    # The theme copies each notebook page's executed notebook there before this runs.
    built_notebook = Path(app.outdir, "_sources", notebook_path(pagename))
    if not built_notebook.is_file():
        LOGGER.warning(f"{pagename}: no {built_notebook} for the Colab button to open")
        return
    for button in buttons:
        button["url"] = colab_notebook_url(
            button["url"], app.config.colab_notebooks_branch, pagename
        )


def setup(app):
    app.add_config_value("colab_notebooks_branch", "notebooks", "html")
    # After sphinx-book-theme's launch buttons (priority 501) made the link.
    app.connect("html-page-context", point_colab_at_notebook, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
