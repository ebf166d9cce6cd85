/* peersm web UI: the login page's script (served by webui/pages.py at /ui/login).
 *
 * A good login answer carries the API token in <meta name="peersm-token"> (that one
 * response only, Cache-Control: no-store). This script keeps it in sessionStorage (this
 * tab, this origin and port only) and leaves with location.replace("/ui/"), so the
 * /ui/login?code=... entry leaves the history. A refused login only drops the code from
 * the address bar.
 */
"use strict";
(function () {
  const meta = document.querySelector('meta[name="peersm-token"]');
  if (meta && meta.content) {
    sessionStorage.setItem("peersm-token", meta.content);
    meta.remove();
    location.replace("/ui/");
  } else {
    history.replaceState(null, "", location.pathname);
  }
})();
