//! `POST /calls/dial`: click-to-call. A signed-in employee asks the gateway to ring their
//! own registered phones and, when one answers, to call a customer from one of our
//! numbers (the SIP side: `sip::b2bua::dial`; the choice of number: `crm::dial`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Principal;
use super::calls::Call;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiJson;
use crate::crm::dial::{self, DialRefusal};
use crate::sip::b2bua::{DialError, DialOrder};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DialBody {
    /// The customer's number, in any spelling; a national one is read with the
    /// calling number's default country.
    pub to: String,
    /// Our number to call from (E.164), shown to the customer. `null` or left out: the
    /// first number whose `directions` allow outgoing calls and that has a trunk.
    #[serde(default)]
    pub number: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Dialled {
    /// The new call, as `GET /calls/{id}` shows it: outgoing, the employee as `user`.
    pub call: Call,
}

/// Click-to-call for the signed-in employee: their registered phones ring first (all at
/// once, for the number's ring timeout); when one answers, the customer is called out
/// through the number's trunk with the number as caller ID. Answers at once, before
/// anyone picks up; the call window and `GET /calls/{id}` follow the call.
#[utoipa::path(post, path = "/calls/dial", tag = "calls", request_body = DialBody,
    responses((status = 202, body = Dialled), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
async fn dial(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<DialBody>,
) -> ApiResult<(StatusCode, Json<Dialled>)> {
    principal.require_employee()?;
    let Some(user) = principal.user_id().cloned() else {
        return Err(ApiError::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "not_an_employee",
            field: None,
            message: "the bootstrap admin token is no employee and has no phones to ring: \
                      dial with an employee's own token or session"
                .to_owned(),
        });
    };
    let Some(dialer) = &state.dialer else {
        return Err(ApiError::Unavailable {
            code: "sip_not_running",
            message: "click-to-call needs the gateway's SIP side, which is not running".to_owned(),
        });
    };
    let country = state.store.crm_settings().await?.default_country;
    let lines = state.store.dial_lines().await?;
    let line = dial::choose_line(&lines, body.number.as_deref(), country).map_err(refused)?;
    let target = dial::target(&body.to, line.settings.default_country).map_err(refused)?;
    let record = dialer
        .dial(DialOrder {
            user,
            number: line.settings,
            trunk: line.trunk,
            target,
        })
        .await
        .map_err(not_placed)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Dialled {
            call: Call::with_live(record, &state.live),
        }),
    ))
}

fn refused(refusal: DialRefusal) -> ApiError {
    let message = refusal.to_string();
    match refusal {
        DialRefusal::UnknownNumber(_) => ApiError::field("unknown_number", "number", message),
        DialRefusal::NoTrunk(_) => ApiError::field("no_trunk", "number", message),
        DialRefusal::NoOutgoingNumber => ApiError::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "no_outgoing_number",
            field: None,
            message,
        },
        DialRefusal::BadTarget { .. } => ApiError::field("invalid_phone", "to", message),
    }
}

fn not_placed(err: DialError) -> ApiError {
    match err {
        DialError::NoRegisteredPhone => ApiError::Conflict {
            code: "no_registered_phone",
            message: "none of your phones is registered with the gateway: register a \
                      softphone or desk phone with your extension, then dial again"
                .to_owned(),
        },
        DialError::Trunk(why) => ApiError::field(
            "trunk_unusable",
            "number",
            format!("the number's trunk cannot carry the call: {why}"),
        ),
        DialError::NoRelay => ApiError::Unavailable {
            code: "no_media_relay",
            message: err.to_string(),
        },
        DialError::NoMediaPorts => ApiError::Unavailable {
            code: "no_media_ports",
            message: "every media port of the gateway is in use; try again shortly".to_owned(),
        },
        DialError::B2bua(err) => ApiError::Internal(err.to_string()),
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(dial))
}
