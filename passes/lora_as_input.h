// passes/lora_as_input.h — what the lora-as-input pass reads besides the graph.
#pragma once

#include <string_view>
#include <vector>

#include "support/result.h"

namespace kiln {

// The projections a "q,k,v,..." list names (short or PEFT names), indexed as
// lora_names' modules; every one when the list is empty. An unknown name is an error.
Result<std::vector<bool>> parse_lora_targets(std::string_view list);

}  // namespace kiln
