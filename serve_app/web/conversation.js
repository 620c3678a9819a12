// The conversation on screen: user turns (partial, then final), the reply token by token, tool
// cards, images with their analysis, and notes. Server text is only ever set as textContent.

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function pretty(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

const IMAGE_NOTE = "The user shared an image. What it shows: ";

export class ConversationView {
  constructor(list, partialLine) {
    this.list = list;
    this.partialLine = partialLine;
    this.reply = null; // {bubbles: [], text}: the response being streamed
    this.lastReply = null; // the previous one: its audio may still be playing when it is interrupted
    this.bubble = null; // the bubble tokens go into now
    this.toolCards = new Map();
    this.pendingImages = [];
  }

  get isEmpty() {
    return !this.list.querySelector(".msg, .card");
  }

  append(node) {
    const nearBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 80;
    const hint = this.list.querySelector(".hint");
    if (hint) hint.remove();
    this.list.append(node);
    if (nearBottom) node.scrollIntoView({ block: "end" });
    return node;
  }

  message(role, text, status) {
    const item = element("article", `msg ${role}`);
    item.append(element("span", "who", role === "user" ? "You" : "Assistant"));
    item.append(element("p", "text", text));
    if (status === "interrupted") item.classList.add("interrupted");
    return this.append(item);
  }

  partial(text) {
    this.partialLine.hidden = !text;
    this.partialLine.textContent = text ? `“${text}…”` : "";
  }

  userFinal(text) {
    this.partial("");
    this.endReply();
    this.lastReply = null;
    this.message("user", text);
  }

  token(token) {
    if (!this.reply) this.reply = { bubbles: [], text: "" };
    if (!this.bubble) {
      this.bubble = this.message("assistant", "");
      this.bubble.classList.add("streaming");
      this.reply.bubbles.push(this.bubble);
    }
    this.reply.text += token;
    this.bubble.querySelector(".text").textContent += token;
    const nearBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 120;
    if (nearBottom) this.bubble.scrollIntoView({ block: "end" });
  }

  replyComplete(fullText) {
    // one bubble: the server's full text is the authority (tokens can be merged or trimmed)
    if (this.reply && this.reply.bubbles.length === 1) this.reply.bubbles[0].querySelector(".text").textContent = fullText;
    else if (!this.reply && fullText) this.message("assistant", fullText);
    this.endReply();
  }

  replyInterrupted(reason) {
    const reply = this.reply || this.lastReply;
    const last = reply && reply.bubbles[reply.bubbles.length - 1];
    if (last && !last.classList.contains("interrupted")) {
      for (const bubble of reply.bubbles) bubble.classList.add("interrupted");
      last.append(element("span", "badge", reason === "manual" ? "stopped" : "interrupted by you"));
    }
    this.endReply();
    this.lastReply = null;
  }

  endReply() {
    if (this.bubble) this.bubble.classList.remove("streaming");
    if (this.reply) this.lastReply = this.reply;
    this.reply = null;
    this.bubble = null;
  }

  toolStart({ toolName, args, callId }) {
    if (this.bubble) this.bubble.classList.remove("streaming");
    this.bubble = null; // tokens after the tool call go below its card
    const card = element("article", "card tool running");
    card.append(element("h2", "card-title", `Tool: ${toolName}`));
    card.append(element("span", "card-status", "running…"));
    const argsBlock = element("div", "card-block");
    argsBlock.append(element("span", "label", "Arguments"), element("pre", "args", pretty(args)));
    card.append(argsBlock);
    this.toolCards.set(callId, card);
    this.append(card);
  }

  toolResult({ toolName, result, callId }) {
    let card = this.toolCards.get(callId);
    if (!card) {
      this.toolStart({ toolName, args: {}, callId });
      card = this.toolCards.get(callId);
    }
    card.classList.remove("running");
    const failed = result && typeof result === "object" && "error" in result;
    card.classList.toggle("failed", Boolean(failed));
    card.querySelector(".card-status").textContent = failed ? "failed" : "done";
    const resultBlock = element("div", "card-block");
    resultBlock.append(element("span", "label", "Result"), element("pre", "result", pretty(result)));
    card.append(resultBlock);
  }

  image(dataUrl, prompt) {
    const card = element("article", "card image pending");
    const picture = element("img");
    picture.src = dataUrl;
    picture.alt = prompt ? `Your image: ${prompt}` : "Your image";
    card.append(picture);
    const body = element("div", "card-body");
    if (prompt) body.append(element("p", "prompt", prompt));
    body.append(element("p", "analysis", "Analysing the image…"));
    card.append(body);
    this.pendingImages.push(card);
    this.append(card);
  }

  visionResult(description) {
    const card = this.pendingImages.shift();
    if (!card) {
      this.note(`Image: ${description}`);
      return;
    }
    card.classList.remove("pending");
    card.querySelector(".analysis").textContent = description;
  }

  imageFailed() {
    const card = this.pendingImages.shift();
    if (card) {
      card.classList.remove("pending");
      card.classList.add("failed");
      card.querySelector(".analysis").textContent = "This image could not be analysed.";
    }
  }

  note(text, kind = "info") {
    return this.append(element("p", `note ${kind}`, text));
  }

  /** A page opened on an existing session: show what the server kept (its last messages). */
  restore(messages) {
    for (const m of messages) {
      if (m.role === "user" || m.role === "assistant") {
        if (m.content) this.message(m.role, m.content, m.status);
      } else if (m.role === "system" && m.content && m.content.startsWith(IMAGE_NOTE)) {
        this.note(`Image: ${m.content.slice(IMAGE_NOTE.length)}`);
      }
    }
  }
}
