// Calls core's JSON API with the session cookie and the page's CSRF token.
window.nectarApi = async function (method, url, body) {
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const response = await fetch(url, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": token, Accept: "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  return { status: response.status, data, headers: response.headers };
};

window.nectarShowProblems = function (element, data) {
  element.textContent = "";
  if (!data || !data.errors) { element.textContent = (data && data.detail) || ""; return; }
  const list = document.createElement("ul");
  list.className = "problems";
  for (const problem of data.errors) {
    const item = document.createElement("li");
    item.textContent = (problem.path || "") + ": " + problem.message;
    list.appendChild(item);
  }
  element.appendChild(list);
};
