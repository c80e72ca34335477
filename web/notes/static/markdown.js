// A small Markdown renderer for notes, safe by construction: it builds DOM nodes and puts note
// text in with textContent, never as HTML; links may only go to http, https and mailto.
// notesMarkdown.render(text) returns a DocumentFragment; notesMarkdown.plain(text) a snippet.
(function () {
  const MAX_DEPTH = 16; // quotes and lists nested deeper than this are shown as plain text
  const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
  const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
  const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
  const QUOTE = /^ {0,3}> ?/;
  const ITEM = /^( *)([-*+]|\d{1,9}[.)])(?:[ \t]+(.*)|[ \t]*)$/;
  const TASK = /^\[([ xX])\][ \t]+/;
  const SAFE_LINK = /^(https?:\/\/|mailto:)/i;

  // An element holding `children`: a string, a node or a list of them (lists may be long, so
  // they are never spread into a call's arguments).
  function el(name, children = []) {
    const node = document.createElement(name);
    for (const child of [].concat(children)) node.append(child);
    return node;
  }

  function indentOf(line) {
    return line.length - line.replace(/^ +/, "").length;
  }

  function startsBlock(line) {
    return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
  }

  // ---- blocks ----------------------------------------------------------------------------

  function blocks(lines, depth) {
    const out = [];
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let match;
      if (!line.trim()) { i++; continue; }

      if ((match = FENCE.exec(line))) {
        const marker = match[1];
        const indent = indentOf(line);
        const body = [];
        i++;
        while (i < lines.length) {
          const close = lines[i].trim();
          if (close.startsWith(marker) && close.split("").every((c) => c === marker[0])) { i++; break; }
          body.push(lines[i].replace(new RegExp("^ {0," + indent + "}"), ""));
          i++;
        }
        const code = el("code", body.join("\n"));
        if (match[2]) code.dataset.lang = match[2];
        out.push(el("pre", code));
        continue;
      }
      if ((match = HEADING.exec(line))) {
        out.push(el("h" + match[1].length, inline(match[2] || "")));
        i++;
        continue;
      }
      if (RULE.test(line) && !(ITEM.test(line) && /^ {0,3}[-*] [^-*]/.test(line))) {
        out.push(el("hr"));
        i++;
        continue;
      }
      if (QUOTE.test(line) && depth < MAX_DEPTH) {
        const inner = [];
        while (i < lines.length && QUOTE.test(lines[i])) inner.push(lines[i++].replace(QUOTE, ""));
        out.push(el("blockquote", blocks(inner, depth + 1)));
        continue;
      }
      if (ITEM.test(line) && depth < MAX_DEPTH) {
        i = list(lines, i, depth, out);
        continue;
      }
      const para = [line];
      i++;
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) para.push(lines[i++]);
      out.push(el("p", paragraph(para)));
    }
    return out;
  }

  function list(lines, start, depth, out) {
    const first = ITEM.exec(lines[start]);
    const ordered = /\d/.test(first[2]);
    const kind = ordered ? first[2].slice(-1) : first[2];
    const base = first[1].length;
    const node = el(ordered ? "ol" : "ul");
    if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
    let i = start;
    while (i < lines.length) {
      const match = ITEM.exec(lines[i]);
      if (!match || match[1].length !== base) break;
      const sameKind = ordered ? /\d/.test(match[2]) && match[2].slice(-1) === kind : match[2] === kind;
      if (!sameKind) break;
      const content = base + match[2].length + 1;
      const body = [match[3] || ""];
      i++;
      while (i < lines.length) {
        const line = lines[i];
        if (!line.trim()) {
          // a blank line continues the item only if an indented line follows
          let next = i + 1;
          while (next < lines.length && !lines[next].trim()) next++;
          if (next < lines.length && indentOf(lines[next]) >= content) {
            for (let k = i; k < next; k++) body.push(lines[k]);
            i = next;
            continue;
          }
          break;
        }
        const other = ITEM.exec(line);
        if (indentOf(line) >= content) body.push(line.slice(content));
        else if (other && other[1].length > base) body.push(line.slice(other[1].length));
        else if (other || startsBlock(line)) break;
        else body.push(line.trim()); // a lazy continuation of the item's paragraph
        i++;
      }
      const item = el("li");
      const task = TASK.exec(body[0]);
      if (task) {
        body[0] = body[0].slice(task[0].length);
        const box = el("input");
        box.type = "checkbox";
        box.disabled = true;
        box.checked = task[1] !== " ";
        item.className = "task";
        item.append(box, " ");
      }
      const children = blocks(body, depth + 1);
      // an item of one paragraph shows it without the paragraph's margins
      if (children.length && children[0].tagName === "P") {
        const first = children.shift();
        while (first.firstChild) item.append(first.firstChild);
      }
      for (const child of children) item.append(child);
      node.append(item);
      // blank lines between two items do not end the list
      let next = i;
      while (next < lines.length && !lines[next].trim()) next++;
      const after = next < lines.length ? ITEM.exec(lines[next]) : null;
      if (next > i && after && after[1].length === base) i = next;
    }
    out.push(node);
    return i;
  }

  function paragraph(lines) {
    const nodes = [];
    lines.forEach((line, index) => {
      if (index > 0) nodes.push(el("br"));
      for (const node of inline(line.trim())) nodes.push(node);
    });
    return nodes;
  }

  // ---- inline ----------------------------------------------------------------------------

  const PUNCT = "\\`*_{}[]()#+-.!<>~|\"'";
  const BARE_URL = /(https?:\/\/[^\s<>]+|mailto:[^\s<>]+)/iy;
  const AUTOLINK = /<((?:https?:\/\/|mailto:)[^\s<>]+)>/iy;

  function link(label, href) {
    const a = el("a", label);
    a.href = href;
    a.rel = "noopener noreferrer nofollow";
    return a;
  }

  // Inline spans: code, links, bold, italic, strikethrough and bare links. `misses` remembers
  // the searches that found no closer, so hostile input (thousands of `*`) stays linear.
  function inline(text, depth = 0, misses = new Map()) {
    const out = [];
    let plain = "";
    const flush = () => { if (plain) { out.push(document.createTextNode(plain)); plain = ""; } };
    const closer = (marker, from, check) => {
      const key = marker + (check ? "!" : "");
      if ((misses.get(key) ?? Infinity) <= from) return -1;
      let at = text.indexOf(marker, from);
      while (at >= 0 && check && !check(at)) at = text.indexOf(marker, at + 1);
      if (at < 0) misses.set(key, Math.min(misses.get(key) ?? Infinity, from));
      return at;
    };
    let brackets = null;
    let i = 0;
    while (i < text.length) {
      const c = text[i];
      if (c === "\\" && i + 1 < text.length && PUNCT.includes(text[i + 1])) {
        plain += text[i + 1];
        i += 2;
        continue;
      }
      if (c === "`") {
        const run = /^`+/.exec(text.slice(i, i + 32))[0];
        const end = closer(run, i + run.length, (at) => text[at + run.length] !== "`" && text[at - 1] !== "`");
        if (end > 0) {
          flush();
          let code = text.slice(i + run.length, end);
          if (/^ .* $/.test(code)) code = code.slice(1, -1);
          out.push(el("code", code));
          i = end + run.length;
          continue;
        }
        plain += run;
        i += run.length;
        continue;
      }
      if (c === "[" && depth < MAX_DEPTH) {
        brackets = brackets || pairs(text);
        const close = brackets.get(i) ?? -1;
        if (close > 0 && text[close + 1] === "(") {
          const end = closer(")", close + 2) < 0 ? -1 : destinationEnd(text, close + 2);
          if (end > 0) {
            const target = text.slice(close + 2, end).trim().split(/\s+/)[0] || "";
            const href = target.replace(/^<(.*)>$/, "$1");
            const label = inline(text.slice(i + 1, close), depth + 1);
            flush();
            out.push(SAFE_LINK.test(href) ? link(label, href) : el("span", label));
            i = end + 1;
            continue;
          }
        }
      }
      if (c === "!" && text[i + 1] === "[") { plain += "!"; i++; continue; } // images: their alt text
      if (c === "<") {
        AUTOLINK.lastIndex = i;
        const auto = AUTOLINK.exec(text);
        if (auto) {
          flush();
          out.push(link([auto[1]], auto[1]));
          i += auto[0].length;
          continue;
        }
      }
      if ((c === "h" || c === "H" || c === "m" || c === "M") && (i === 0 || /[\s(]/.test(text[i - 1]))) {
        BARE_URL.lastIndex = i;
        const bare = BARE_URL.exec(text);
        if (bare) {
          const url = bare[1].replace(/[.,;:!?)'"]+$/, "");
          if (/[/@.]\w/.test(url.replace(/^\w+:\/*/, "x"))) {
            flush();
            out.push(link([url], url));
            i += url.length;
            continue;
          }
        }
      }
      if ((c === "*" || c === "_" || c === "~") && depth < MAX_DEPTH) {
        const double = text[i + 1] === c;
        if (c === "~" && !double) { plain += c; i++; continue; }
        const marker = double ? c + c : c;
        const after = text[i + marker.length];
        const wordStart = c !== "_" || i === 0 || !/\w/.test(text[i - 1]);
        if (after && !/\s/.test(after) && after !== c && wordStart) {
          const end = closer(marker, i + marker.length + 1, (at) =>
            !/\s/.test(text[at - 1]) && text[at + marker.length] !== c && text[at - 1] !== c &&
            (c !== "_" || !/\w/.test(text[at + marker.length] || "")));
          if (end > 0) {
            flush();
            const inner = inline(text.slice(i + marker.length, end), depth + 1);
            const tag = c === "~" ? "del" : double ? "strong" : "em";
            out.push(el(tag, inner));
            i = end + marker.length;
            continue;
          }
        }
        plain += double ? marker : c;
        i += double ? 2 : 1;
        continue;
      }
      plain += c;
      i++;
    }
    flush();
    return out;
  }

  // The index of the `)` that ends a link's destination starting at `from` (parentheses inside
  // it must balance, as in Markdown), or -1; destinations longer than 2048 are not looked for.
  function destinationEnd(text, from) {
    let level = 0;
    for (let i = from; i < text.length && i < from + 2048; i++) {
      if (text[i] === "\\") i++;
      else if (text[i] === "(") level++;
      else if (text[i] === ")" && level-- === 0) return i;
    }
    return -1;
  }

  // Where each `[` is closed: a map from the index of a `[` to that of its `]`, in one pass.
  function pairs(text) {
    const found = new Map();
    const open = [];
    for (let i = 0; i < text.length; i++) {
      if (text[i] === "\\") i++;
      else if (text[i] === "[") open.push(i);
      else if (text[i] === "]" && open.length) found.set(open.pop(), i);
    }
    return found;
  }

  function render(text) {
    const fragment = document.createDocumentFragment();
    for (const node of blocks(String(text || "").replace(/\t/g, "    ").split(/\r\n|\r|\n/), 0)) fragment.append(node);
    return fragment;
  }

  // A one-line preview of a note's text: Markdown's marks taken out, spaces collapsed.
  function plain(text, length = 160) {
    return String(text || "")
      .slice(0, 4 * length)
      .replace(/^ {0,3}(#{1,6}|>|[-*+]|\d+[.)])\s+(\[[ xX]\]\s+)?/gm, "")
      .replace(/^ {0,3}(`{3,}|~{3,}).*$/gm, "")
      .replace(/\[([^\]]*)\]\([^)]*\)/g, "$1")
      .replace(/[*_~`]+/g, "")
      .replace(/\s+/g, " ")
      .trim()
      .slice(0, length);
  }

  window.notesMarkdown = { render, plain };
})();
