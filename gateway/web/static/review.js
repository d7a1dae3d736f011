// Review page keyboard shortcuts (listed on the page): j/k move between cards, a approves the
// focused card, r goes to its rejection reason, l opens its lineage. Keys typed into a field are
// left alone; Esc leaves the field.
(function () {
  "use strict";
  const cards = Array.from(document.querySelectorAll(".card[data-job-id]"));
  if (!cards.length) return;
  let current = 0;

  function focus(index) {
    current = Math.max(0, Math.min(cards.length - 1, index));
    cards.forEach((card, i) => card.classList.toggle("focused", i === current));
    cards[current].focus({ preventScroll: true });
    cards[current].scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  cards.forEach((card, i) => card.addEventListener("click", () => {
    if (current !== i) focus(i);
  }));

  function inField(target) {
    return target instanceof HTMLElement && target.matches("input, select, textarea");
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (inField(event.target)) {
      if (event.key === "Escape") {
        event.target.blur();
        focus(current);
      }
      return;
    }
    const card = cards[current];
    switch (event.key) {
      case "j": focus(current + 1); break;
      case "k": focus(current - 1); break;
      case "a": card.querySelector("form.approve-form").requestSubmit(); break;
      case "r": card.querySelector("form.reject-form select").focus(); break;
      case "l": window.location.assign(card.querySelector("a.lineage").href); break;
      default: return;
    }
    event.preventDefault();
  });

  focus(0);
})();
