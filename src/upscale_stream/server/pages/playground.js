// The playground: the seed's "Upscale" panel, speaking the real wire protocol from the browser.
// One WebSocket, one authentication message, all selected images in ONE message array, results
// matched by taskUUID as they arrive (never by position), a ping while the socket is idle
// (protocol.md sections 2-4). The API key lives in a variable of this page only.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const PING_IDLE_MS = 1000 * Number(params.get("ping") || 20);
  const TYPES = { "image/png": "PNG", "image/jpeg": "JPG", "image/webp": "WEBP" };
  const EXT = { PNG: "png", JPG: "jpg", WEBP: "webp" };

  let models = {};
  let nextId = 1;
  const items = [];          // every image row, in the order added
  const byTask = new Map();  // taskUUID -> item, while in flight
  let socket = null;         // {ws, ready: Promise, lastTraffic}
  let pingTimer = null;

  function uuid4() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function setState(text, cls) {
    const el = $("state");
    el.textContent = text;
    el.className = cls || "muted";
  }

  // -- per-model rules, from the same table the Python client uses (/pages/models.json) -------

  async function loadModels() {
    const response = await fetch("/pages/models.json");
    models = await response.json();
    const select = $("model");
    for (const [air, spec] of Object.entries(models)) {
      const option = document.createElement("option");
      option.value = air;
      option.textContent = `${spec.name} (${air})`;
      select.appendChild(option);
    }
    select.value = models["runware:503@1"] ? "runware:503@1" : Object.keys(models)[0];
    applyRules();
  }

  // The client's rule, word for word (models.py): a factor the model does not support is
  // refused. The page says so before sending, and still sends, so the server's own error for
  // that image is what you see in its row.
  function ruleMessage(model, factor) {
    const spec = models[model];
    if (!spec || spec.factors.includes(factor)) return "";
    return `upscaleFactor=${factor}: ${spec.name} (${model}) supports upscaleFactor ` +
      `${spec.factors.join(" or ")}; only SwinIR (runware:503@1) supports 4`;
  }

  function applyRules() {
    const model = $("model").value;
    const spec = models[model] || { settings: [] };
    const rule = ruleMessage(model, Number($("factor").value));
    $("rule").textContent = rule &&
      `${rule}. (The Python client refuses this before sending; the playground sends it, so you see the server's own answer.)`;
    $("prompt-field").hidden = !spec.settings.includes("positivePrompt");
  }

  // -- images -----------------------------------------------------------------------------

  function addFiles(files) {
    let refused = 0;
    for (const file of files) {
      if (!TYPES[file.type]) { refused += 1; continue; }
      const item = { id: nextId++, name: file.name, state: "reading", dataURI: null };
      items.push(item);
      buildRow(item);
      const reader = new FileReader();
      reader.onload = () => { item.dataURI = reader.result; setItem(item, "ready", ""); showInput(item); };
      reader.onerror = () => setItem(item, "error", "could not read the file");
      reader.readAsDataURL(file);
    }
    $("empty").hidden = items.length > 0;
    if (refused) setState(`${refused} file(s) skipped: only PNG, JPG and WEBP are accepted`, "warn");
  }

  function buildRow(item) {
    const row = document.createElement("div");
    row.className = "row";
    row.dataset.name = item.name;
    row.innerHTML =
      '<div class="input"><img alt="input"><div class="caption muted"></div></div>' +
      '<div class="output"><img alt="result" hidden><div class="caption muted"></div>' +
      '<a class="download" hidden>download</a></div>' +
      '<div><strong class="name"></strong><div class="status"></div><div class="timing muted"></div></div>';
    row.querySelector(".name").textContent = item.name;
    item.row = row;
    $("images").appendChild(row);
    setItem(item, item.state, "");
  }

  function showInput(item) {
    const img = item.row.querySelector(".input img");
    img.onload = () => {
      item.row.dataset.inputWidth = img.naturalWidth;
      item.row.dataset.inputHeight = img.naturalHeight;
      item.row.querySelector(".input .caption").textContent = `input ${img.naturalWidth}×${img.naturalHeight}`;
    };
    img.src = item.dataURI;
  }

  function setItem(item, state, detail) {
    item.state = state;
    item.row.dataset.state = state;
    const status = item.row.querySelector(".status");
    status.textContent = detail ? `${state}: ${detail}` : state;
    status.className = "status " + (state === "done" ? "ok" : state === "error" ? "bad" : "");
  }

  function showResult(item, result) {
    const format = item.format;
    const uri = result.imageDataURI || result.imageURL ||
      (result.imageBase64Data && `data:image/${EXT[format]};base64,${result.imageBase64Data}`);
    const img = item.row.querySelector(".output img");
    const link = item.row.querySelector(".download");
    const stem = item.name.replace(/\.[^.]*$/, "");
    img.onload = () => {
      item.row.dataset.width = img.naturalWidth;
      item.row.dataset.height = img.naturalHeight;
      item.row.querySelector(".output .caption").textContent = `result ${img.naturalWidth}×${img.naturalHeight}`;
      setItem(item, "done", "");
    };
    img.hidden = false;
    img.src = uri;
    link.href = uri;
    link.download = `${stem}@x${item.factor}.${EXT[format]}`;
    link.hidden = false;
    item.result = uri;
  }

  // -- the socket -------------------------------------------------------------------------

  function connect(key, url) {
    if (socket && socket.ws.readyState === WebSocket.OPEN && socket.key === key && socket.url === url) {
      return socket.ready;
    }
    if (socket) socket.ws.close();
    const ws = new WebSocket(url);
    const current = { ws, key, url, lastTraffic: Date.now() };
    current.ready = new Promise((resolve, reject) => {
      current.resolve = resolve;
      current.reject = reject;
    });
    ws.onopen = () => {
      send(current, [{ taskType: "authentication", apiKey: key }]);
      setState("authenticating…");
    };
    ws.onmessage = (event) => onMessage(current, event.data);
    ws.onclose = (event) => {
      current.reject(new Error(`the socket closed (${event.code})`));
      if (socket === current) {
        socket = null;
        for (const item of byTask.values()) setItem(item, "error", `connection closed (${event.code}) before the result`);
        byTask.clear();
        setState("disconnected");
      }
    };
    ws.onerror = () => setState(`cannot reach ${url}`, "bad");
    socket = current;
    return current.ready;
  }

  function send(current, message) {
    current.ws.send(JSON.stringify(message));
    current.lastTraffic = Date.now();
  }

  function onMessage(current, text) {
    current.lastTraffic = Date.now();
    let frame;
    try { frame = JSON.parse(text); } catch { setState("the server sent a frame that is not JSON", "bad"); return; }
    for (const item of frame.data || []) {
      if (item.taskType === "authentication" && item.connectionSessionUUID) {
        current.resolve(item.connectionSessionUUID);
        setState("connected", "ok");
      } else if (item.taskType === "ping") {
        // a pong: the idle deadline already moved
      } else if (byTask.has(item.taskUUID)) {
        const target = byTask.get(item.taskUUID);
        byTask.delete(item.taskUUID);
        target.ms = Math.round(performance.now() - target.sentAt);
        target.row.querySelector(".timing").textContent = `${target.ms} ms`;
        showResult(target, item);
      }
    }
    for (const error of frame.errors || []) {
      const text = `${error.code}: ${error.message}`;
      if (error.taskType === "authentication") {
        current.reject(new Error(text));
        setState(text, "bad");
      } else if (byTask.has(error.taskUUID)) {
        const target = byTask.get(error.taskUUID);
        byTask.delete(error.taskUUID);
        target.row.querySelector(".timing").textContent = `${Math.round(performance.now() - target.sentAt)} ms`;
        setItem(target, "error", text);
      } else {
        setState(`server: ${text}`, "warn");  // an error for no task of ours fails nothing
      }
    }
    if (byTask.size === 0 && socket === current) setState("connected, idle", "ok");
  }

  function pingWhileIdle() {
    if (socket && socket.ws.readyState === WebSocket.OPEN && Date.now() - socket.lastTraffic >= PING_IDLE_MS) {
      send(socket, [{ taskType: "ping", ping: true }]);
    }
  }

  // -- the buttons ------------------------------------------------------------------------

  async function upscale() {
    const key = $("api-key").value.trim();
    if (!key) { setState("enter the API key first", "bad"); $("api-key").focus(); return; }
    const todo = items.filter((i) => i.dataURI && (i.state === "ready" || i.state === "cancelled"));
    if (!todo.length) { setState("add images first (or Remove all and add new ones)", "warn"); return; }
    const quality = Number($("quality").value);
    if (!(quality >= 20 && quality <= 99)) { setState(`quality ${$("quality").value}: must be from 20 to 99`, "bad"); return; }
    let current;
    try {
      await connect(key, $("api-url").value.trim());
      current = socket;
    } catch (error) {
      setState(`not connected: ${error.message}`, "bad");
      return;
    }
    const model = $("model").value;
    const factor = Number($("factor").value);
    const format = $("format").value;
    const prompt = $("prompt").value.trim();
    const spec = models[model] || { settings: [] };
    const tasks = todo.map((item) => {
      item.taskUUID = uuid4();
      item.format = format;
      item.factor = factor;
      const task = {
        taskType: "upscale", taskUUID: item.taskUUID, inputImage: item.dataURI, model,
        upscaleFactor: factor, outputType: "dataURI", outputFormat: format,
        outputQuality: quality, deliveryMethod: "sync",
      };
      if (prompt && spec.settings.includes("positivePrompt")) task.settings = { positivePrompt: prompt };
      return task;
    });
    const now = performance.now();
    for (const item of todo) {
      item.sentAt = now;
      byTask.set(item.taskUUID, item);
      setItem(item, "upscaling", "");
    }
    send(current, tasks);  // every selected image in ONE message array
    setState(`${tasks.length} task(s) in flight`);
  }

  function cancel() {
    for (const item of byTask.values()) setItem(item, "cancelled", "");
    byTask.clear();
    if (socket) socket.ws.close(1000, "cancelled");
    socket = null;
    setState("cancelled; Upscale sends the cancelled images again", "warn");
  }

  function removeAll() {
    cancel();
    items.length = 0;
    for (const row of [...$("images").querySelectorAll(".row")]) row.remove();
    $("empty").hidden = false;
    setState("removed every image");
  }

  async function downloadAll() {
    const done = items.filter((i) => i.state === "done");
    if (!done.length) { setState("no result to download yet", "warn"); return; }
    for (const item of done) {
      item.row.querySelector(".download").click();
      await new Promise((resolve) => setTimeout(resolve, 150));  // browsers drop bursts of downloads
    }
    setState(`downloaded ${done.length} result(s)`, "ok");
  }

  // -- wiring -----------------------------------------------------------------------------

  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  $("api-url").value = `${scheme}//${location.host}/v1`;
  $("files").addEventListener("change", (event) => { addFiles(event.target.files); event.target.value = ""; });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    addFiles(event.dataTransfer.files);
  });
  $("model").addEventListener("change", applyRules);
  $("factor").addEventListener("change", applyRules);
  $("upscale").addEventListener("click", upscale);
  $("cancel").addEventListener("click", cancel);
  $("remove-all").addEventListener("click", removeAll);
  $("download-all").addEventListener("click", downloadAll);
  pingTimer = setInterval(pingWhileIdle, Math.min(1000, PING_IDLE_MS));
  loadModels().catch((error) => setState(`could not load the model table: ${error}`, "bad"));
})();
