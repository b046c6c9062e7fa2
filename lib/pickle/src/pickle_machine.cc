#include "ckptguard/pickle_machine.h"

#include "literal_domain.h"

namespace ckptguard {

void CollectGlobalNames(PickleDecoder& decoder, uint64_t max_ops,
                        const std::function<bool(std::string_view module, std::string_view name)>& on_global) {
  LiteralDomain domain;
  bool more = true;
  domain.on_global = [&](std::string_view module, std::string_view name) {
    if (more) more = on_global(module, name);
  };
  // The run's own allowance: reading on after an error must stay cheap
  // whatever is left of the file's budget.
  BudgetLimits limits;
  limits.max_opcodes = max_ops;
  Budget budget(limits);
  PickleMachine<LiteralDomain> machine(domain, MachineLimits{}, budget, MachineMode::kLenient);
  PickleOp op;
  while (more && !decoder.AtEnd()) {
    if (!decoder.Next(op) || !machine.Step(op) || op.code == Opcode::kStop) break;
  }
}

}  // namespace ckptguard
