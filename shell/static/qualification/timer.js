// The attempt's countdown. The server sends the seconds left (its clock, which tests fake), so the page counts
// down from that rather than trusting the browser's clock against the deadline. Without JS the page still shows
// the time left at load and the deadline.
(() => {
  "use strict";
  const el = document.getElementById("timer");
  if (!el) return;
  const live = document.getElementById("timer-alert");
  const end = performance.now() + Number(el.dataset.remaining) * 1000;
  const warnAt = [60, 20];
  const show = (s) => `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  const tick = () => {
    const left = Math.max(0, Math.ceil((end - performance.now()) / 1000));
    el.textContent = left > 0 ? show(left) : "time is up";
    if (warnAt.length && left <= warnAt[0] && left > 0) {
      while (warnAt.length && left <= warnAt[0]) warnAt.shift();  // one warning per threshold crossed
      live.textContent = `${left} seconds left.`;
    }
    if (left === 0) {
      live.textContent = "Time is up: answers sent now are not scored.";
      return;
    }
    setTimeout(tick, 250);
  };
  tick();
})();
