// The Profile experience: reads and writes /api/profile/ with the page's own token.
document.addEventListener("DOMContentLoaded", async () => {
  const form = document.getElementById("profile-form");
  const status = document.getElementById("status");
  const avatar = document.getElementById("avatar");
  const picture = document.getElementById("picture");

  function say(text, isError = false) {
    status.textContent = text;
    status.classList.toggle("error", isError);
  }

  function show(profile) {
    form.display_name.value = profile.display_name;
    form.bio.value = profile.bio;
    avatar.src = profile.avatar || "/static/twin.svg";
  }

  try {
    show(await twin.api("/profile/"));
  } catch (error) {
    say("Could not load your profile: " + error.message, true);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    say("Saving…");
    try {
      show(await twin.api("/profile/", {
        method: "PUT",
        body: { display_name: form.display_name.value, bio: form.bio.value },
      }));
      say("Saved.");
    } catch (error) {
      say(error.message, true);
    }
  });

  picture.addEventListener("change", async () => {
    const file = picture.files[0];
    if (!file) return;
    say("Uploading picture…");
    try {
      show(await twin.api("/profile/avatar", {
        method: "PUT", body: file, headers: { "Content-Type": file.type },
      }));
      say("Picture saved.");
    } catch (error) {
      say(error.message, true);
    }
  });

  document.getElementById("remove-picture").addEventListener("click", async () => {
    try {
      await twin.api("/profile/avatar", { method: "DELETE" });
      avatar.src = "/static/twin.svg";
      say("Picture removed.");
    } catch (error) {
      say(error.message, true);
    }
  });
});
