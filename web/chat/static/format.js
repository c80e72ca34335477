// The light markdown of chat messages, made into DOM nodes (never into markup, so a message can
// hold any text and stay text): *italic* and _italic_, **bold**, `code`, ```code blocks```,
// "> " quotes, and http(s) links, bare or as [words](https://…). Anything else, a javascript:
// link included, stays as it was written.
(function () {
  const INLINE = new RegExp(
    [
      "`([^`\\n]+)`", // 1: code
      "\\[([^\\[\\]\\n]{1,300})\\]\\(([^()\\s]{1,2000})\\)", // 2, 3: [words](address)
      "(https?:\\/\\/[^\\s<>\"]+)", // 4: a bare address
      "\\*\\*(?=\\S)([\\s\\S]*?\\S)\\*\\*", // 5: bold
      "(?<![\\p{L}\\p{N}])\\*(?=[^\\s*])([^*\\n]*?[^\\s*])\\*(?![\\p{L}\\p{N}])", // 6: italic
      "(?<![\\p{L}\\p{N}_])_(?=[^\\s_])([^_\\n]*?[^\\s_])_(?![\\p{L}\\p{N}_])", // 7: italic
    ].join("|"),
    "gu",
  );
  const TRAILING = /[.,;:!?'"\])}]+$/; // punctuation after an address belongs to the sentence
  const DEPTH = 4;

  function safeHref(address) {
    let url;
    try { url = new URL(address); } catch (_) { return null; }
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  }

  function link(href, words) {
    const a = document.createElement("a");
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    a.textContent = words;
    return a;
  }

  // A bare address loses the punctuation that ends its sentence, but keeps a ")" it opened.
  function trimAddress(address) {
    let cut = address;
    for (;;) {
      const tail = cut.match(TRAILING);
      if (!tail) return cut;
      const last = cut.slice(-1);
      if (last === ")" && (cut.match(/\(/g) || []).length >= (cut.match(/\)/g) || []).length) return cut;
      cut = cut.slice(0, -1);
    }
  }

  function inline(text, depth = 0) {
    const out = [];
    let at = 0;
    let plain = "";
    const flush = () => { if (plain) { out.push(document.createTextNode(plain)); plain = ""; } };
    if (depth > DEPTH) return [document.createTextNode(text)];
    const pattern = new RegExp(INLINE.source, INLINE.flags);
    let m;
    while ((m = pattern.exec(text)) !== null) {
      plain += text.slice(at, m.index);
      let used = m[0].length;
      if (m[1] !== undefined) {
        flush();
        out.push(Object.assign(document.createElement("code"), { textContent: m[1] }));
      } else if (m[2] !== undefined) {
        const href = safeHref(m[3]);
        if (href) { flush(); out.push(link(href, m[2])); } else plain += m[0];
      } else if (m[4] !== undefined) {
        const address = trimAddress(m[4]);
        used = address.length;
        const href = safeHref(address);
        if (href) { flush(); out.push(link(href, address)); } else plain += address;
      } else if (m[5] !== undefined) {
        flush();
        const strong = document.createElement("strong");
        strong.append(...inline(m[5], depth + 1));
        out.push(strong);
      } else {
        flush();
        const em = document.createElement("em");
        em.append(...inline(m[6] !== undefined ? m[6] : m[7], depth + 1));
        out.push(em);
      }
      at = m.index + used;
      pattern.lastIndex = at;
    }
    plain += text.slice(at);
    flush();
    return out;
  }

  function block(tag, className, lines) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    node.append(...inline(lines.join("\n")));
    return node;
  }

  // The message as a fragment of paragraphs, quotes and code blocks.
  function render(text) {
    const fragment = document.createDocumentFragment();
    const lines = String(text).split(/\r\n|\r|\n/);
    let para = [];
    let quote = [];
    const flushPara = () => {
      if (para.length) fragment.append(block("p", "", para));
      para = [];
    };
    const flushQuote = () => {
      if (quote.length) fragment.append(block("blockquote", "", quote));
      quote = [];
    };
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const fence = line.match(/^\s*```(.*)$/);
      if (fence) {
        flushPara();
        flushQuote();
        const rest = fence[1];
        const code = [];
        if (rest.length > 3 && rest.endsWith("```")) { // ```all on one line```
          code.push(rest.slice(0, -3));
        } else {
          if (rest.trim() && !/^[\w+-]+$/.test(rest.trim())) code.push(rest); // not a language name
          for (i += 1; i < lines.length && !/^\s*```\s*$/.test(lines[i]); i++) code.push(lines[i]);
        }
        const pre = document.createElement("pre");
        pre.append(Object.assign(document.createElement("code"), { textContent: code.join("\n") }));
        fragment.append(pre);
        continue;
      }
      const quoted = line.match(/^\s*>\s?(.*)$/);
      if (quoted) {
        flushPara();
        quote.push(quoted[1]);
        continue;
      }
      flushQuote();
      para.push(line);
    }
    flushPara();
    flushQuote();
    return fragment;
  }

  // One line of plain words for a list or a reply quote: the marks left out.
  function excerpt(text, length = 120) {
    const blocks = [...render(String(text).slice(0, 4 * length)).childNodes];
    const plain = blocks.map((node) => node.textContent).join(" ").replace(/\s+/g, " ").trim();
    return plain.length > length ? plain.slice(0, length - 1).trimEnd() + "…" : plain;
  }

  window.chatFormat = { render, excerpt };
})();
