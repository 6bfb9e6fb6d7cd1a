// Just enough JSON for Main's output: maps, lists, strings, numbers and booleans.
package tokenvend.javaclient;

import java.util.List;
import java.util.Map;

final class Json {
  private Json() {}

  static String write(Object value) {
    StringBuilder sb = new StringBuilder();
    write(sb, value);
    return sb.toString();
  }

  private static void write(StringBuilder sb, Object value) {
    if (value == null) {
      sb.append("null");
    } else if (value instanceof String s) {
      string(sb, s);
    } else if (value instanceof Number || value instanceof Boolean) {
      sb.append(value);
    } else if (value instanceof Map<?, ?> map) {
      sb.append('{');
      String sep = "";
      for (Map.Entry<?, ?> e : map.entrySet()) {
        sb.append(sep);
        string(sb, String.valueOf(e.getKey()));
        sb.append(':');
        write(sb, e.getValue());
        sep = ",";
      }
      sb.append('}');
    } else if (value instanceof List<?> list) {
      sb.append('[');
      String sep = "";
      for (Object item : list) {
        sb.append(sep);
        write(sb, item);
        sep = ",";
      }
      sb.append(']');
    } else {
      throw new IllegalArgumentException("no JSON form for " + value.getClass());
    }
  }

  private static void string(StringBuilder sb, String s) {
    sb.append('"');
    for (char c : s.toCharArray()) {
      switch (c) {
        case '"' -> sb.append("\\\"");
        case '\\' -> sb.append("\\\\");
        case '\n' -> sb.append("\\n");
        case '\r' -> sb.append("\\r");
        case '\t' -> sb.append("\\t");
        default -> {
          if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
          else sb.append(c);
        }
      }
    }
    sb.append('"');
  }
}
