// Appending JSON string literals to a buffer: the event plane formats millions of lines, so it
// writes JSON directly instead of building a document tree.
#pragma once

#include <string>
#include <string_view>

namespace oshpc::json_text {

// Appends value as a quoted JSON string (control characters, quotes and backslashes escaped;
// bytes >= 0x80 passed through, so valid UTF-8 stays valid). Never fails.
void append_string(std::string& out, std::string_view value);

}  // namespace oshpc::json_text
