/* An inline formula wider than its line (a long one on a phone) cannot wrap: MathJax 3
   does not break lines. Such a formula, and only it, becomes a box that scrolls sideways
   inside the text, so its end is never cut off and the page never widens. */
(function () {
  "use strict";
  const WIDE = "ct-wide-math";
  const INLINE_MATH = '.bd-article mjx-container:not([display="true"])';

  function markWideInlineMath() {
    for (const math of document.querySelectorAll(INLINE_MATH)) {
      math.classList.remove(WIDE);
      const line = math.parentElement && math.parentElement.closest("p, li, td, th, dd, div");
      // A formula set as a block (alone in a table cell) overflows itself: scrollWidth.
      const width = Math.max(math.scrollWidth, math.getBoundingClientRect().width);
      if (line && width > line.clientWidth + 1) {
        math.classList.add(WIDE);
      }
    }
  }

  function afterTypesetting() {
    const mathjax = window.MathJax;
    if (mathjax && mathjax.startup && mathjax.startup.promise) {
      mathjax.startup.promise.then(markWideInlineMath);
    }
  }

  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(markWideInlineMath, 150);
  });
  // MathJax is loaded asynchronously: by the window's load event it has started.
  if (document.readyState === "complete") afterTypesetting();
  else window.addEventListener("load", afterTypesetting);
})();
