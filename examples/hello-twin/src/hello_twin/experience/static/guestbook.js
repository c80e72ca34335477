// The Guestbook experience: lists and writes entries through /api/guestbook/ with its own token.
document.addEventListener("DOMContentLoaded", async () => {
  const list = document.getElementById("entries");
  const form = document.getElementById("sign");
  const status = document.getElementById("status");

  function render(entries) {
    list.replaceChildren(...entries.map((entry) => {
      const item = document.createElement("li");
      item.className = "card";
      const who = document.createElement("strong");
      who.textContent = entry.author;
      const text = document.createElement("p");
      text.textContent = entry.text;
      item.append(who, text);
      return item;
    }));
  }

  async function refresh() {
    render(await twin.api("/guestbook/entries"));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await twin.api("/guestbook/entries", {
        method: "POST", body: { author: form.author.value, text: form.text.value },
      });
      form.text.value = "";
      status.textContent = "Thank you!";
      await refresh();
    } catch (error) {
      status.textContent = error.message;
    }
  });

  refresh().catch((error) => { status.textContent = error.message; });
});
