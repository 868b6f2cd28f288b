// Guess the reader's time zone for the form; they can still edit it. No third-party code.
document.querySelectorAll("input[data-guess-zone]").forEach(function (input) {
  if (input.value === "UTC") {
    try { input.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch (e) { /* keep UTC */ }
  }
});
