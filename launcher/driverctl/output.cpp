#include "launcher/driverctl/output.hpp"

#include <array>
#include <memory>
#include <stdexcept>
#include <vector>

#include <google/protobuf/util/json_util.h>

namespace oshpc::driverctl {
namespace {

using google::protobuf::FieldDescriptor;

bool is_secret(const FieldDescriptor& field) {
  return field.cpp_type() == FieldDescriptor::CPPTYPE_STRING && !field.is_repeated() &&
         field.name() == "sandbox_token";
}

}  // namespace

void redact_secrets(google::protobuf::Message& message) {
  const auto* reflection = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  // Only fields that are set: an absent token stays absent, so a reader can tell the two apart.
  reflection->ListFields(message, &fields);
  for (const FieldDescriptor* field : fields) {
    if (is_secret(*field)) {
      reflection->SetString(&message, field, std::string(kRedacted));
    } else if (field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) {
      continue;
    } else if (field->is_repeated()) {
      for (int i = 0; i < reflection->FieldSize(message, field); ++i) {
        redact_secrets(*reflection->MutableRepeatedMessage(&message, field, i));
      }
    } else {
      redact_secrets(*reflection->MutableMessage(&message, field));
    }
  }
}

std::string to_json_line(const google::protobuf::Message& message) {
  std::unique_ptr<google::protobuf::Message> copy(message.New());
  copy->CopyFrom(message);
  redact_secrets(*copy);

  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  // The .proto's names, as the contract documents spell them, so output can be grepped for them.
  options.preserve_proto_field_names = true;
  std::string line;
  auto status = google::protobuf::util::MessageToJsonString(*copy, &line, options);
  if (!status.ok()) {
    throw std::runtime_error("cannot print a " + copy->GetTypeName() +
                             " as JSON: " + std::string(status.message()));
  }
  return line;
}

std::string_view status_code_name(grpc::StatusCode code) {
  static constexpr std::array<std::string_view, 17> kNames{
      "OK",
      "CANCELLED",
      "UNKNOWN",
      "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED",
      "NOT_FOUND",
      "ALREADY_EXISTS",
      "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED",
      "FAILED_PRECONDITION",
      "ABORTED",
      "OUT_OF_RANGE",
      "UNIMPLEMENTED",
      "INTERNAL",
      "UNAVAILABLE",
      "DATA_LOSS",
      "UNAUTHENTICATED",
  };
  auto index = static_cast<std::size_t>(code);
  return index < kNames.size() ? kNames[index] : "UNKNOWN";
}

void Output::message(const google::protobuf::Message& message) {
  out_ << to_json_line(message) << '\n' << std::flush;
}

void Output::rpc_error(const grpc::Status& status) {
  std::string text = status.error_message();
  if (text.empty()) text = "(the driver gave no message)";
  err_ << "oshpc-driverctl: error: " << status_code_name(status.error_code()) << ": " << text
       << '\n'
       << std::flush;
}

void Output::note(std::string_view text) {
  err_ << "oshpc-driverctl: " << text << '\n' << std::flush;
}

}  // namespace oshpc::driverctl
