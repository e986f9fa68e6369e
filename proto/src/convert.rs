use claw_commands::{
    Command, EventRecord, GpuHealthResult, GpuInfo, GpuSample, NodeCapabilities, ProposalAction, WorkloadSpec,
};

use crate::v1::{self, submit_request};
use crate::{ConversionError, Result};

fn opt(s: String) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

impl From<v1::WorkloadSpec> for WorkloadSpec {
    fn from(p: v1::WorkloadSpec) -> Self {
        WorkloadSpec {
            name: p.name,
            image: p.image,
            command: p.command,
            env: p.env.into_iter().collect(),
            gpus: p.gpus,
            gpu_model: opt(p.gpu_model),
            min_gpu_memory_mb: p.min_gpu_memory_mb,
            labels: p.labels.into_iter().collect(),
            priority: p.priority,
            node_selector: p.node_selector.into_iter().collect(),
        }
    }
}

impl From<WorkloadSpec> for v1::WorkloadSpec {
    fn from(d: WorkloadSpec) -> Self {
        v1::WorkloadSpec {
            name: d.name,
            image: d.image,
            command: d.command,
            env: d.env.into_iter().collect(),
            gpus: d.gpus,
            gpu_model: d.gpu_model.unwrap_or_default(),
            min_gpu_memory_mb: d.min_gpu_memory_mb,
            labels: d.labels.into_iter().collect(),
            priority: d.priority,
            node_selector: d.node_selector.into_iter().collect(),
        }
    }
}

impl TryFrom<v1::ProposalAction> for ProposalAction {
    type Error = ConversionError;
    fn try_from(p: v1::ProposalAction) -> Result<Self> {
        match p.action {
            Some(v1::proposal_action::Action::CancelWorkload(workload_id)) => {
                Ok(ProposalAction::CancelWorkload { workload_id })
            }
            Some(v1::proposal_action::Action::DrainNode(node)) => Ok(ProposalAction::DrainNode { node }),
            None => Err(ConversionError::Missing("create_proposal.action")),
        }
    }
}

impl From<v1::GpuSample> for GpuSample {
    fn from(s: v1::GpuSample) -> Self {
        GpuSample {
            gpu_uuid: s.gpu_uuid,
            utilization_pct: s.utilization_pct,
            memory_used_mb: s.memory_used_mb,
            temperature_c: s.temperature_c,
            power_w: s.power_w,
            sm_clock_mhz: s.sm_clock_mhz,
            ecc_corrected: s.ecc_corrected,
            ecc_uncorrected: s.ecc_uncorrected,
            throttle_reasons: s.throttle_reasons,
            xid_errors: s.xid_errors,
        }
    }
}

impl From<GpuSample> for v1::GpuSample {
    fn from(s: GpuSample) -> Self {
        v1::GpuSample {
            gpu_uuid: s.gpu_uuid,
            utilization_pct: s.utilization_pct,
            memory_used_mb: s.memory_used_mb,
            temperature_c: s.temperature_c,
            power_w: s.power_w,
            sm_clock_mhz: s.sm_clock_mhz,
            ecc_corrected: s.ecc_corrected,
            ecc_uncorrected: s.ecc_uncorrected,
            throttle_reasons: s.throttle_reasons,
            xid_errors: s.xid_errors,
        }
    }
}

impl From<v1::GpuHealthResult> for GpuHealthResult {
    fn from(r: v1::GpuHealthResult) -> Self {
        GpuHealthResult {
            runtime: r.runtime,
            device: r.device,
            device_index: r.device_index,
            matrix_size: r.matrix_size,
            passed: r.passed,
            gflops: r.gflops,
            checksum: r.checksum,
            reference_checksum: r.reference_checksum,
            max_abs_error: r.max_abs_error,
            elapsed_ms: r.elapsed_ms,
            detail: r.detail,
        }
    }
}

impl From<GpuHealthResult> for v1::GpuHealthResult {
    fn from(r: GpuHealthResult) -> Self {
        v1::GpuHealthResult {
            runtime: r.runtime,
            device: r.device,
            device_index: r.device_index,
            matrix_size: r.matrix_size,
            passed: r.passed,
            gflops: r.gflops,
            checksum: r.checksum,
            reference_checksum: r.reference_checksum,
            max_abs_error: r.max_abs_error,
            elapsed_ms: r.elapsed_ms,
            detail: r.detail,
        }
    }
}

/// The log stores events as JSON, which has no NaN or infinity: such a value
/// would be written as `null` and could never be read back. Rejected here, at
/// the edge, naming the field and the list position.
fn finite(field: &'static str, index: usize, v: f64) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(ConversionError::Invalid {
            field,
            reason: format!("item {index} is {v}; only finite numbers are accepted"),
        })
    }
}

/// Turns the `command` of a `SubmitRequest` into a domain command. Ids the
/// client left empty (workload id, proposal id) stay empty here; the API
/// layer fills them before proposing. `basis_seq` 0 is likewise resolved
/// there.
pub fn command_from_pb(cmd: Option<submit_request::Command>) -> Result<Command> {
    use submit_request::Command as C;
    let cmd = cmd.ok_or(ConversionError::Missing("command"))?;
    Ok(match cmd {
        C::SubmitWorkload(s) => Command::SubmitWorkload {
            workload_id: s.workload_id,
            spec: s.spec.ok_or(ConversionError::Missing("submit_workload.spec"))?.into(),
        },
        C::CancelWorkload(c) => {
            if c.workload.is_empty() {
                return Err(ConversionError::Missing("cancel_workload.workload"));
            }
            Command::CancelWorkload { workload: c.workload, reason: c.reason }
        }
        C::RequestNodeDrain(d) => {
            if d.node.is_empty() {
                return Err(ConversionError::Missing("request_node_drain.node"));
            }
            Command::RequestNodeDrain { node: d.node, reason: d.reason }
        }
        C::StateIntent(i) => Command::StateIntent { text: i.text },
        C::CreateProposal(p) => Command::CreateProposal {
            proposal_id: p.proposal_id,
            action: p.action.ok_or(ConversionError::Missing("create_proposal.action"))?.try_into()?,
            basis_seq: p.basis_seq,
            reason: p.reason,
        },
        C::ApproveProposal(a) => {
            if a.proposal_id.is_empty() {
                return Err(ConversionError::Missing("approve_proposal.proposal_id"));
            }
            Command::ApproveProposal { proposal_id: a.proposal_id, comment: a.comment }
        }
        C::RejectProposal(r) => {
            if r.proposal_id.is_empty() {
                return Err(ConversionError::Missing("reject_proposal.proposal_id"));
            }
            Command::RejectProposal { proposal_id: r.proposal_id, reason: r.reason }
        }
        C::RegisterNode(n) => Command::RegisterNode {
            node: n.node,
            capabilities: NodeCapabilities {
                cpus: n.cpus,
                memory_mb: n.memory_mb,
                gpus: n
                    .gpus
                    .into_iter()
                    .map(|g| GpuInfo { index: g.index, uuid: g.uuid, model: g.model, memory_mb: g.memory_mb })
                    .collect(),
                driver_version: opt(n.driver_version),
                cuda_version: opt(n.cuda_version),
                labels: n.labels.into_iter().collect(),
            },
        },
        C::Heartbeat(h) => Command::Heartbeat { node: h.node },
        C::ObserveGpuMetrics(m) => {
            for (i, g) in m.samples.iter().enumerate() {
                finite("observe_gpu_metrics.samples.utilization_pct", i, g.utilization_pct)?;
                finite("observe_gpu_metrics.samples.temperature_c", i, g.temperature_c)?;
                finite("observe_gpu_metrics.samples.power_w", i, g.power_w)?;
            }
            Command::ObserveGpuMetrics { node: m.node, samples: m.samples.into_iter().map(Into::into).collect() }
        }
        C::ReportWorkloadStarted(s) => Command::ReportWorkloadStarted { workload_id: s.workload_id, node: s.node },
        C::ReportWorkloadExited(e) => Command::ReportWorkloadExited {
            workload_id: e.workload_id,
            node: e.node,
            exit_code: e.exit_code,
            oom_killed: e.oom_killed,
        },
        C::ReportWorkloadLogs(l) => {
            Command::ReportWorkloadLogs { workload_id: l.workload_id, node: l.node, stream: l.stream, data: l.data }
        }
        C::RequestHealthCheck(r) => {
            if r.node.is_empty() {
                return Err(ConversionError::Missing("request_health_check.node"));
            }
            Command::RequestHealthCheck { node: r.node, check_id: r.check_id }
        }
        C::ReportHealthCheck(r) => {
            if r.node.is_empty() {
                return Err(ConversionError::Missing("report_health_check.node"));
            }
            if r.check_id.is_empty() {
                return Err(ConversionError::Missing("report_health_check.check_id"));
            }
            for (i, h) in r.results.iter().enumerate() {
                finite("report_health_check.results.gflops", i, h.gflops)?;
                finite("report_health_check.results.checksum", i, h.checksum)?;
                finite("report_health_check.results.reference_checksum", i, h.reference_checksum)?;
                finite("report_health_check.results.max_abs_error", i, h.max_abs_error)?;
                finite("report_health_check.results.elapsed_ms", i, h.elapsed_ms)?;
            }
            Command::ReportHealthCheck {
                node: r.node,
                check_id: r.check_id,
                results: r.results.into_iter().map(Into::into).collect(),
                error: opt(r.error),
            }
        }
        C::ResolveIncident(r) => {
            if r.incident_id.is_empty() {
                return Err(ConversionError::Missing("resolve_incident.incident_id"));
            }
            Command::ResolveIncident { incident_id: r.incident_id, root_cause: r.root_cause, resolution: r.resolution }
        }
    })
}

/// The wire form of a stored event: a few header fields for generic tools,
/// and the whole record as JSON so clients can verify the hash chain.
pub fn event_to_pb(r: &EventRecord) -> v1::Event {
    v1::Event {
        seq: r.seq,
        kind: r.event.kind().to_string(),
        time_ms: r.time_ms,
        actor: r.actor.to_string(),
        record_json: serde_json::to_string(r).unwrap_or_default(),
    }
}

pub fn event_from_pb(e: &v1::Event) -> Result<EventRecord> {
    serde_json::from_str(&e.record_json)
        .map_err(|err| ConversionError::Invalid { field: "event.record_json", reason: err.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_command_names_the_field() {
        assert_eq!(command_from_pb(None).unwrap_err().to_string(), "missing field command");
        let c = submit_request::Command::SubmitWorkload(v1::SubmitWorkload { spec: None, workload_id: String::new() });
        assert_eq!(command_from_pb(Some(c)).unwrap_err().to_string(), "missing field submit_workload.spec");
    }

    #[test]
    fn non_finite_measurements_are_rejected_naming_the_field() {
        let sample = |power_w| v1::GpuSample { gpu_uuid: "GPU-1".into(), power_w, ..Default::default() };
        let c = submit_request::Command::ObserveGpuMetrics(v1::ObserveGpuMetrics {
            node: "n".into(),
            samples: vec![sample(300.0), sample(f64::NAN)],
        });
        assert_eq!(
            command_from_pb(Some(c)).unwrap_err().to_string(),
            "invalid field observe_gpu_metrics.samples.power_w: item 1 is NaN; only finite numbers are accepted"
        );
        let c = submit_request::Command::ReportHealthCheck(v1::ReportHealthCheck {
            node: "n".into(),
            check_id: "c".into(),
            results: vec![v1::GpuHealthResult { checksum: f64::INFINITY, ..Default::default() }],
            error: String::new(),
        });
        let err = command_from_pb(Some(c)).unwrap_err().to_string();
        assert!(err.contains("report_health_check.results.checksum") && err.contains("inf"), "{err}");
        let c = submit_request::Command::ObserveGpuMetrics(v1::ObserveGpuMetrics {
            node: "n".into(),
            samples: vec![sample(f64::MAX)],
        });
        assert!(command_from_pb(Some(c)).is_ok());
    }

    #[test]
    fn workload_spec_round_trips() {
        let spec = WorkloadSpec {
            name: "train-1".into(),
            image: "busybox".into(),
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            gpus: 2,
            gpu_model: Some("H100".into()),
            node_selector: [("zone".to_string(), "eu".to_string())].into(),
            ..Default::default()
        };
        let back: WorkloadSpec = v1::WorkloadSpec::from(spec.clone()).into();
        assert_eq!(back, spec);
    }

    #[test]
    fn node_reports_convert() {
        let c = submit_request::Command::ReportWorkloadLogs(v1::ReportWorkloadLogs {
            workload_id: "w".into(),
            node: "n".into(),
            stream: "stderr".into(),
            data: "oops".into(),
        });
        assert_eq!(
            command_from_pb(Some(c)).unwrap(),
            Command::ReportWorkloadLogs {
                workload_id: "w".into(),
                node: "n".into(),
                stream: "stderr".into(),
                data: "oops".into()
            }
        );
        let c = submit_request::Command::ReportWorkloadExited(v1::ReportWorkloadExited {
            workload_id: "w".into(),
            node: "n".into(),
            exit_code: 137,
            oom_killed: true,
        });
        assert!(matches!(command_from_pb(Some(c)).unwrap(), Command::ReportWorkloadExited { oom_killed: true, .. }));
    }

    #[test]
    fn health_check_commands_convert_and_name_missing_fields() {
        let c = submit_request::Command::RequestHealthCheck(v1::RequestHealthCheck::default());
        assert_eq!(command_from_pb(Some(c)).unwrap_err().to_string(), "missing field request_health_check.node");
        let result =
            GpuHealthResult { runtime: "wgpu".into(), device: "llvmpipe".into(), passed: true, ..Default::default() };
        let c = submit_request::Command::ReportHealthCheck(v1::ReportHealthCheck {
            node: "n".into(),
            check_id: "hc-1".into(),
            results: vec![result.clone().into()],
            error: String::new(),
        });
        assert_eq!(
            command_from_pb(Some(c)).unwrap(),
            Command::ReportHealthCheck {
                node: "n".into(),
                check_id: "hc-1".into(),
                results: vec![result],
                error: None
            }
        );
    }
}
