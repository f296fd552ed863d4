//! The Auth service, every RPC of etcd's, and how a request's credentials
//! are read: the `token` metadata (grpc-gateway's `authorization` too), and
//! with `--client-cert-auth` the verified client certificate's common name.
//! The work is in `server/auth.rs`; errors become etcd's statuses in
//! `status_of`.
//! Tests: `tests/auth_interop.rs`.

use cairn_proto::etcdserverpb::auth_server::Auth;
use cairn_proto::etcdserverpb::*;
use tonic::{Request, Response, Status};

use super::{reply, status_of};
use crate::server::{Caller, Credentials, Server};

/// etcd's metadata keys for the token (`rpctypes.TokenFieldNameGRPC`, and
/// the gateway's `TokenFieldNameSwagger`).
const TOKEN_KEYS: [&str; 2] = ["token", "authorization"];

/// The credentials a request carries.
pub fn credentials<T>(request: &Request<T>) -> Credentials {
    let token = TOKEN_KEYS.iter().find_map(|k| {
        request
            .metadata()
            .get(*k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    // As etcd: a request relayed by a grpc-gateway carries the gateway's
    // certificate, whose name is not the client's.
    let via_gateway = request.metadata().contains_key("grpcgateway-accept");
    Credentials {
        token,
        common_name: cairn_runtime::tls::client_cert_common_name(request).filter(|_| !via_gateway),
    }
}

/// Who sent `request` (an unknown token is etcd's `invalid auth token`).
pub async fn caller<T>(server: &Server, request: &Request<T>) -> Result<Caller, Status> {
    server.caller(credentials(request)).await.map_err(status_of)
}

/// The Auth service.
#[derive(Clone)]
pub struct AuthService(pub Server);

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(self.0.auth_enable(&who).await)
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(self.0.auth_disable(&who).await)
    }

    async fn auth_status(
        &self,
        request: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(self.0.auth_status(&who).await)
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        reply(self.0.authenticate(request.into_inner()).await)
    }

    async fn user_add(
        &self,
        request: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(self.0.user_add(&who, request.into_inner()).await)
    }

    async fn user_get(
        &self,
        request: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(self.0.user_get(&who, request.into_inner()).await)
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(self.0.user_list(&who).await)
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(self.0.user_delete(&who, request.into_inner()).await)
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(
            self.0
                .user_change_password(&who, request.into_inner())
                .await,
        )
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(self.0.user_grant_role(&who, request.into_inner()).await)
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(self.0.user_revoke_role(&who, request.into_inner()).await)
    }

    async fn role_add(
        &self,
        request: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(self.0.role_add(&who, request.into_inner()).await)
    }

    async fn role_get(
        &self,
        request: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(self.0.role_get(&who, request.into_inner()).await)
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(self.0.role_list(&who).await)
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(self.0.role_delete(&who, request.into_inner()).await)
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(
            self.0
                .role_grant_permission(&who, request.into_inner())
                .await,
        )
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let who = caller(&self.0, &request).await?;
        reply(
            self.0
                .role_revoke_permission(&who, request.into_inner())
                .await,
        )
    }
}
