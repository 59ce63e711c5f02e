// Text that came from a file or the network, made safe to print or log: a peer must not be able
// to move the cursor, ring the bell, retitle the terminal or forge a log line. Control
// characters (C0, DEL, and the C1 range as UTF-8 encodes it, U+0080..U+009F) become \n, \t, \r,
// \e or \xNN, and a backslash becomes \\; everything else, UTF-8 included, is kept.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace syncbn {

inline std::string escape_control(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  auto hex = [&out](unsigned char c) {
    char code[8];
    std::snprintf(code, sizeof(code), "\\x%02x", c);
    out += code;
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == 0x1b) {
      out += "\\e";
    } else if (c < 0x20 || c == 0x7f) {
      hex(c);
    } else if (c == 0xc2 && i + 1 < text.size() &&
               static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(text[i + 1]) <= 0x9f) {
      hex(c);  // a C1 control (U+0080..U+009F), e.g. the 8-bit CSI
      hex(static_cast<unsigned char>(text[++i]));
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace syncbn
