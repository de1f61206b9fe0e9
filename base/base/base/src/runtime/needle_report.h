// The HTML report of `longkv needle`: one self-contained page (inline CSS,
// no scripts, no network) with the run's settings and one heatmap per
// (task, KV mode): x = needle depth, y = prompt length, each cell coloured
// red (0%) to green (100%) with its accuracy printed in it.
//
// Kept free of model and runtime types so tests can render reports from
// hand-made data.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace longkv {

struct NeedleHeatmap {
  std::string task;  // "passkey" | "niah"
  std::string mode;  // KV mode, spelled out
  std::vector<int> lengths;
  std::vector<double> depths;  // fractions in [0, 1]
  // correct[l][d] of trials[l][d]; a cell with 0 trials is drawn empty.
  std::vector<std::vector<int>> correct, trials;
};

struct NeedleReport {
  std::string title;
  std::vector<std::pair<std::string, std::string>> settings;  // label, value (plain text)
  std::vector<NeedleHeatmap> heatmaps;
};

// Escapes &, <, >, " and ' for use in HTML text and attribute values.
std::string html_escape(std::string_view s);

// The whole page. Throws Error if a heatmap's grids do not match its axes.
std::string needle_report_html(const NeedleReport& r);

// Writes the page to `path`; throws Error naming the path on failure.
void write_needle_report(const std::string& path, const NeedleReport& r);

}  // namespace longkv
