#include "runtime/needle_report.h"

#include <cmath>
#include <fstream>

#include "core/error.h"

namespace longkv {
namespace {

const char* const kStyle = R"(
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; }
h2 { font-size: 1.1em; margin-top: 1.6em; }
table.settings { border-collapse: collapse; margin-bottom: 1em; }
table.settings th, table.settings td { text-align: left; padding: 2px 12px 2px 0; vertical-align: top; }
table.settings td { font-family: ui-monospace, monospace; white-space: pre-wrap; }
section.heatmap { display: inline-block; margin: 0 2em 2em 0; vertical-align: top; }
table.grid { border-collapse: collapse; }
table.grid td.cell { width: 4.2em; height: 2.2em; text-align: center; color: #fff; font-weight: 600;
  font-size: 0.85em; border: 1px solid #fff; }
table.grid td.empty { background: #ddd; color: #777; }
table.grid th { font-weight: normal; font-size: 0.85em; padding: 0 6px; }
table.grid th.len { text-align: right; }
.axis { font-size: 0.85em; color: #555; }
.legend { width: 16em; height: 0.8em; margin-top: 0.6em;
  background: linear-gradient(to right, hsl(0,75%,45%), hsl(60,75%,45%), hsl(120,75%,35%)); }
.legend-labels { width: 16em; display: flex; justify-content: space-between; font-size: 0.75em; color: #555; }
)";

// Hue 0 (red) at 0% through 60 (yellow) to 120 (green) at 100%, as the
// usual needle-in-a-haystack charts.
std::string cell_color(double acc) {
  const double hue = 120.0 * acc;
  const double light = 45.0 - 10.0 * acc;  // green is brighter; darken it so white text stays legible
  return strprintf("hsl(%.0f,75%%,%.0f%%)", hue, light);
}

std::string percent(double x) { return strprintf("%.0f%%", 100.0 * x); }

void append_heatmap(std::string& h, const NeedleHeatmap& m) {
  const size_t nl = m.lengths.size(), nd = m.depths.size();
  LONGKV_CHECK(m.correct.size() == nl && m.trials.size() == nl,
               "needle report: heatmap %s/%s has %zu lengths but %zu/%zu rows", m.task.c_str(), m.mode.c_str(), nl,
               m.correct.size(), m.trials.size());
  int all_correct = 0, all_trials = 0;
  for (size_t l = 0; l < nl; ++l) {
    LONGKV_CHECK(m.correct[l].size() == nd && m.trials[l].size() == nd,
                 "needle report: heatmap %s/%s row %zu does not have %zu depths", m.task.c_str(), m.mode.c_str(), l,
                 nd);
    for (size_t d = 0; d < nd; ++d) {
      all_correct += m.correct[l][d];
      all_trials += m.trials[l][d];
    }
  }
  h += "<section class=\"heatmap\">\n";
  h += "<h2>" + html_escape(m.task) + " &mdash; kv <code>" + html_escape(m.mode) + "</code></h2>\n";
  h += "<div class=\"axis\">overall " +
       (all_trials ? percent(static_cast<double>(all_correct) / all_trials) : std::string("&mdash;")) + " (" +
       std::to_string(all_correct) + "/" + std::to_string(all_trials) + ")</div>\n";
  h += "<table class=\"grid\">\n";
  h += "<tr><th class=\"len\">length &#8595; depth &#8594;</th>";
  for (double d : m.depths) h += "<th>" + html_escape(percent(d)) + "</th>";
  h += "</tr>\n";
  for (size_t l = 0; l < nl; ++l) {
    h += "<tr><th class=\"len\">" + std::to_string(m.lengths[l]) + "</th>";
    for (size_t d = 0; d < nd; ++d) {
      const int n = m.trials[l][d], c = m.correct[l][d];
      if (n <= 0) {
        h += "<td class=\"cell empty\">&mdash;</td>";
        continue;
      }
      const double acc = static_cast<double>(c) / n;
      h += "<td class=\"cell\" style=\"background:" + cell_color(acc) + "\" title=\"" +
           html_escape(strprintf("length %d, depth %s: %d/%d correct", m.lengths[l], percent(m.depths[d]).c_str(),
                                 c, n)) +
           "\">" + percent(acc) + "</td>";
    }
    h += "</tr>\n";
  }
  h += "</table>\n";
  h += "<div class=\"legend\"></div><div class=\"legend-labels\"><span>0%</span><span>50%</span>"
       "<span>100%</span></div>\n";
  h += "</section>\n";
}

}  // namespace

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string needle_report_html(const NeedleReport& r) {
  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<title>" + html_escape(r.title) + "</title>\n<style>" + kStyle + "</style>\n</head>\n<body>\n";
  h += "<h1>" + html_escape(r.title) + "</h1>\n";
  h += "<table class=\"settings\">\n";
  for (const auto& [k, v] : r.settings) h += "<tr><th>" + html_escape(k) + "</th><td>" + html_escape(v) + "</td></tr>\n";
  h += "</table>\n";
  for (const auto& m : r.heatmaps) append_heatmap(h, m);
  h += "</body>\n</html>\n";
  return h;
}

void write_needle_report(const std::string& path, const NeedleReport& r) {
  const std::string html = needle_report_html(r);
  std::ofstream f(path, std::ios::binary);
  LONGKV_CHECK(f.good(), "%s: cannot create the HTML report", path.c_str());
  f.write(html.data(), static_cast<std::streamsize>(html.size()));
  f.close();
  LONGKV_CHECK(f.good(), "%s: error writing the HTML report", path.c_str());
}

}  // namespace longkv
